// PowerSgdReducer: DistributedDataParallel's PowerSGD state (per bucket: the
// plan, P, Q, and the error-feedback residual of each compressed gradient)
// and the three steps that reduce one bucket. Private to DDP, which decides
// when each step runs (see Note [PowerSGD schedule] in
// distributed_data_parallel.cpp). The steps that launch are collective: every
// rank calls them for the same buckets in the same order. Not thread-safe.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "tandem/comm/communicator.h"
#include "tandem/core/trace.h"
#include "tandem/parallel/bucket_plan.h"
#include "tandem/parallel/ddp/powersgd.h"

namespace tandem::parallel::detail {

class PowerSgdReducer {
 public:
  // `params` are DDP's parameters (shapes; the index is the parameter's
  // index). Throws InvalidArgument for bad options and NotSupported when a
  // bucket with a compressed gradient is not float32 or float64.
  PowerSgdReducer(const PowerSgdOptions& options, const BucketPlan& plan,
                  const std::vector<at::Tensor>& params, std::shared_ptr<Communicator> comm,
                  std::optional<Millis> timeout, std::shared_ptr<TraceRecorder> trace);
  // Waits (bounded by the timeout) for operations still writing its tensors.
  ~PowerSgdReducer();
  PowerSgdReducer(const PowerSgdReducer&) = delete;
  PowerSgdReducer& operator=(const PowerSgdReducer&) = delete;

  // Whether the next synchronised backward compresses: start_powersgd_iter
  // synchronised backwards have ended.
  bool active() const { return iterations_ >= options_.start_powersgd_iter; }
  // Counts a synchronised backward that ended (compressed or not).
  void end_iteration() { ++iterations_; }

  // Step 1. Collective. `buffer` (bucket b's flat buffer) holds this rank's
  // gradients: adds the error feedback to the compressed ones, launches the
  // all-reduce (average) of the uncompressed ones, computes P = M Q and
  // launches the all-reduce (sum) of the bucket's P's. Returns the bytes it
  // handed to all-reduce.
  int64_t launch_p(size_t b, const at::Tensor& buffer);
  // Step 2. Collective. Waits for P's all-reduce, orthogonalises each P,
  // computes Q = M^T P and launches the all-reduce (sum) of the Q's. Returns
  // the bytes handed to all-reduce. Throws TimeoutError/PeerError from wait.
  int64_t launch_q(size_t b, const at::Tensor& buffer);
  // Step 3. Waits for Q's and the uncompressed all-reduce, then writes the
  // average into `buffer`: P (Q / world)^T for each compressed gradient (its
  // error M - P Q^T kept for the next iteration), the exact average for the
  // rest.
  void finish(size_t b, const at::Tensor& buffer);
  // Forgets in-flight operations after a failed backward.
  void abandon();

  // Parameter `param`'s error-feedback residual (shaped like it), or an
  // undefined tensor when it is not compressed or no compressed step ran yet.
  at::Tensor error(size_t param) const;

 private:
  struct Bucket;
  void initialise_q(Bucket& bucket);
  void wait(const std::shared_ptr<Work>& work, const char* what, size_t b);

  PowerSgdOptions options_;
  std::shared_ptr<Communicator> comm_;
  std::optional<Millis> timeout_;
  std::shared_ptr<TraceRecorder> trace_;
  std::vector<Bucket> buckets_;
  std::vector<std::pair<size_t, size_t>> where_;  // parameter -> (bucket, slot)
  std::vector<std::vector<int64_t>> shapes_;      // per parameter
  int64_t iterations_ = 0;
  uint64_t draws_ = 0;  // random Q initialisations so far (each gets its own seed)
};

}  // namespace tandem::parallel::detail
