// The profile the scaling lab measures and the simulator reads: one JSON
// document ("format": "tandem-profile", "version": 1) with a compute part
// (`tandem profile --model M`: each layer's forward and backward time on one
// process, in execution order, and its byte sizes) and a links part
// (`tandem profile links`: latency alpha and inverse bandwidth beta fitted per
// transport, operation, algorithm and group size). Either part may be
// missing; merge_profiles() joins a compute profile and a links profile.
// docs/lab.md documents every field.
//
// Plain data and pure functions: thread-compatible, nothing collective, no
// LibTorch. read_profile() and parse_profile() throw tandem::InvalidArgument
// naming the file and the field for anything malformed.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tandem::sim {

inline constexpr std::string_view kProfileFormat = "tandem-profile";
inline constexpr int kProfileVersion = 1;

// The transports a link fit can describe.
enum class Transport { kShm, kGloo, kMpi };
// The operations the lab fits: collectives, and one point-to-point message
// (send on one rank, recv on its peer), which the pipeline and the parameter
// server use.
enum class LinkOp { kAllReduce, kReduceScatter, kAllGather, kBroadcast, kSendRecv };
// Collective algorithms the cost model knows (cost_model.h). kDirect is a
// point-to-point message or whatever the backend picks when it exposes no
// choice; a fit on kDirect is used for any algorithm the profile lacks.
enum class Algorithm { kRing, kTree, kHalvingDoubling, kHierarchical, kDirect };

std::string_view name_of(Transport t);
std::string_view name_of(LinkOp op);
std::string_view name_of(Algorithm a);
// Parse a spelling; throw InvalidArgument naming `field` and the spellings.
Transport parse_transport(std::string_view text, std::string_view field);
LinkOp parse_link_op(std::string_view text, std::string_view field);
Algorithm parse_algorithm(std::string_view text, std::string_view field);

// One layer (a module that owns parameters, or a block of them), measured in
// the forward order. Times are medians over the profiled steps; `*_spread_s`
// is the interquartile range.
struct LayerProfile {
  std::string name;
  double forward_s = 0;
  double backward_s = 0;
  double forward_spread_s = 0;
  double backward_spread_s = 0;
  int64_t param_bytes = 0;
  int64_t grad_bytes = 0;
  // Bytes autograd keeps alive for this layer's backward (saved tensors).
  int64_t activation_bytes = 0;
  // Bytes of the layer's output for one batch: what a pipeline stage cut
  // after this layer sends to the next stage.
  int64_t output_bytes = 0;
};

struct ComputeProfile {
  std::string model;          // the zoo name (`--model`)
  std::string model_version;  // hash of the parameter names and shapes
  std::string dtype;          // float32 | float64
  int64_t batch_size = 0;     // per process, the batch every time above is for
  int threads = 1;            // intra-op threads of the profiled process
  int steps = 0;              // steps measured (after warm-up)
  std::vector<LayerProfile> layers;
  // The model's buffers (BatchNorm's running statistics, ...): what ddp,
  // zero1-3 broadcast from rank 0 after each backward (optional, 0).
  int64_t buffer_bytes = 0;
  double optimizer_s = 0;   // the optimizer step over every parameter
  double other_s = 0;       // loss, zero_grad and data: the rest of a step
  double step_s = 0;        // a whole measured step (median), as a check
  double step_spread_s = 0;
  // Every timed step, in order (optional): the machine's step-to-step
  // jitter, which a synchronous step pays as the slowest of its ranks
  // (cluster stragglers `distribution: profile`).
  std::vector<double> step_times_s = {};

  int64_t param_bytes() const;
  double forward_s() const;
  double backward_s() const;
};

// alpha + beta * bytes fitted to a sweep of message sizes.
struct LinkFit {
  Transport transport = Transport::kShm;
  LinkOp op = LinkOp::kAllReduce;
  Algorithm algorithm = Algorithm::kDirect;
  int ranks = 2;               // group size of the sweep
  int hosts = 1;               // hosts the group spanned
  std::string label;           // free text: "veth 1gbit", "loopback"
  double alpha_s = 0;          // fitted latency of one whole operation
  double beta_s_per_byte = 0;  // fitted seconds per byte of the operation's buffer
  double max_relative_error = 0;  // worst |fit - measured| / measured over the points
  struct Point {
    int64_t bytes = 0;
    double seconds = 0;
  };
  std::vector<Point> points;

  double seconds(double bytes) const { return alpha_s + beta_s_per_byte * bytes; }
};

struct Profile {
  int version = kProfileVersion;
  std::optional<ComputeProfile> compute;
  std::vector<LinkFit> links;
};

// Least squares alpha and beta through `points` (at least two distinct
// sizes); alpha is clamped at 0. Fills max_relative_error.
void fit_alpha_beta(LinkFit& fit);

nlohmann::json to_json(const Profile& profile);
// `source` names the document in errors (a path, or "<string>").
Profile parse_profile(const nlohmann::json& doc, std::string_view source);
Profile read_profile(const std::string& path);
// Writes atomically (temporary file, then rename); throws Error naming the path.
void write_profile(const Profile& profile, const std::string& path);
// The compute part of `a` or `b` (InvalidArgument if both have one) and the
// links of both.
Profile merge_profiles(const Profile& a, const Profile& b);

}  // namespace tandem::sim
