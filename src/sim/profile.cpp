#include "tandem/sim/profile.h"

#include <fmt/format.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <utility>

#include "tandem/core/check.h"
#include "tandem/core/error.h"

namespace tandem::sim {
namespace {

using nlohmann::json;

constexpr std::array<std::pair<Transport, std::string_view>, 3> kTransports = {{
    {Transport::kShm, "shm"},
    {Transport::kGloo, "gloo"},
    {Transport::kMpi, "mpi"},
}};
constexpr std::array<std::pair<LinkOp, std::string_view>, 5> kLinkOps = {{
    {LinkOp::kAllReduce, "all_reduce"},
    {LinkOp::kReduceScatter, "reduce_scatter"},
    {LinkOp::kAllGather, "all_gather"},
    {LinkOp::kBroadcast, "broadcast"},
    {LinkOp::kSendRecv, "send_recv"},
}};
constexpr std::array<std::pair<Algorithm, std::string_view>, 5> kAlgorithms = {{
    {Algorithm::kRing, "ring"},
    {Algorithm::kTree, "tree"},
    {Algorithm::kHalvingDoubling, "halving_doubling"},
    {Algorithm::kHierarchical, "hierarchical"},
    {Algorithm::kDirect, "direct"},
}};

template <typename E, size_t N>
std::string_view name_in(const std::array<std::pair<E, std::string_view>, N>& table, E value) {
  for (const auto& [v, name] : table) {
    if (v == value) return name;
  }
  throw InternalError(fmt::format("profile: enum value {} has no name", static_cast<int>(value)));
}

template <typename E, size_t N>
E parse_in(const std::array<std::pair<E, std::string_view>, N>& table, std::string_view text,
           std::string_view field) {
  std::string names;
  for (const auto& [v, name] : table) {
    if (name == text) return v;
    names += (names.empty() ? "" : ", ") + std::string(name);
  }
  throw InvalidArgument(fmt::format("{} must be one of {} (got \"{}\")", field, names, text));
}

// ---- reading ---------------------------------------------------------------

// One JSON object of the document and where it sits ("compute.layers[3]").
// Its errors name the field but not the document: parse_profile adds that.
class Fields {
 public:
  Fields(const json& value, std::string path) : value_(value), path_(std::move(path)) {
    if (!value_.is_object()) fail(path_, "an object", value_);
  }

  [[noreturn]] static void fail(const std::string& path, std::string_view want, const json& got) {
    throw InvalidArgument(fmt::format("field '{}' must be {} (got {})", path, want, got.dump()));
  }

  std::string path(std::string_view key) const {
    return path_.empty() ? std::string(key) : fmt::format("{}.{}", path_, key);
  }
  const json* find(std::string_view key) const {
    auto it = value_.find(key);
    return it == value_.end() ? nullptr : &*it;
  }
  const json& required(std::string_view key) const {
    const json* v = find(key);
    if (v == nullptr) throw InvalidArgument(fmt::format("field '{}' is missing", path(key)));
    return *v;
  }

  std::string text(std::string_view key) const {
    const json& v = required(key);
    if (!v.is_string()) fail(path(key), "a string", v);
    return v.get<std::string>();
  }
  std::string text_or(std::string_view key, std::string fallback) const {
    return find(key) ? text(key) : std::move(fallback);
  }

  // A finite number >= 0 (seconds, ratios).
  double amount(std::string_view key) const {
    const json& v = required(key);
    if (!v.is_number() || !(v.get<double>() >= 0)) fail(path(key), "a number >= 0", v);
    return v.get<double>();
  }
  double amount_or(std::string_view key, double fallback) const {
    return find(key) ? amount(key) : fallback;
  }

  // A whole number >= `min` (bytes, counts).
  int64_t whole(std::string_view key, int64_t min) const {
    const json& v = required(key);
    const bool integral = v.is_number_integer() ||
                          (v.is_number_float() && std::trunc(v.get<double>()) == v.get<double>() &&
                           std::abs(v.get<double>()) < 9.2e18);
    if (!integral || v.get<int64_t>() < min) {
      fail(path(key), fmt::format("an integer >= {}", min), v);
    }
    return v.get<int64_t>();
  }
  int64_t whole_or(std::string_view key, int64_t min, int64_t fallback) const {
    return find(key) ? whole(key, min) : fallback;
  }

  // The array at `key` (an empty one when absent and `optional`).
  const json& array(std::string_view key, bool optional) const {
    static const json kEmpty = json::array();
    if (optional && !find(key)) return kEmpty;
    const json& v = required(key);
    if (!v.is_array()) fail(path(key), "an array", v);
    return v;
  }

 private:
  const json& value_;
  std::string path_;
};

LayerProfile parse_layer(const Fields& f) {
  LayerProfile l;
  l.name = f.text("name");
  l.forward_s = f.amount("forward_s");
  l.backward_s = f.amount("backward_s");
  l.forward_spread_s = f.amount_or("forward_spread_s", 0);
  l.backward_spread_s = f.amount_or("backward_spread_s", 0);
  l.param_bytes = f.whole("param_bytes", 0);
  l.grad_bytes = f.whole_or("grad_bytes", 0, l.param_bytes);
  l.activation_bytes = f.whole("activation_bytes", 0);
  l.output_bytes = f.whole("output_bytes", 0);
  return l;
}

ComputeProfile parse_compute(const Fields& f) {
  ComputeProfile c;
  c.model = f.text("model");
  c.model_version = f.text_or("model_version", "");
  c.dtype = f.text("dtype");
  if (c.dtype != "float32" && c.dtype != "float64") {
    Fields::fail(f.path("dtype"), "\"float32\" or \"float64\"", f.required("dtype"));
  }
  c.batch_size = f.whole("batch_size", 1);
  c.threads = static_cast<int>(f.whole_or("threads", 1, 1));
  c.steps = static_cast<int>(f.whole_or("steps", 0, 0));
  const json& layers = f.array("layers", false);
  for (size_t i = 0; i < layers.size(); ++i) {
    c.layers.push_back(parse_layer(Fields(layers[i], fmt::format("{}[{}]", f.path("layers"), i))));
  }
  c.buffer_bytes = f.whole_or("buffer_bytes", 0, 0);
  c.optimizer_s = f.amount("optimizer_s");
  c.other_s = f.amount("other_s");
  c.step_s = f.amount("step_s");
  c.step_spread_s = f.amount_or("step_spread_s", 0);
  const json& times = f.array("step_times_s", true);
  for (size_t i = 0; i < times.size(); ++i) {
    const json& v = times[i];
    if (!v.is_number() || !(v.get<double>() > 0)) {
      Fields::fail(fmt::format("{}[{}]", f.path("step_times_s"), i), "a number > 0", v);
    }
    c.step_times_s.push_back(v.get<double>());
  }
  return c;
}

LinkFit parse_link(const Fields& f) {
  LinkFit l;
  l.transport =
      parse_transport(f.text("transport"), fmt::format("field '{}'", f.path("transport")));
  l.op = parse_link_op(f.text("op"), fmt::format("field '{}'", f.path("op")));
  l.algorithm =
      parse_algorithm(f.text("algorithm"), fmt::format("field '{}'", f.path("algorithm")));
  l.ranks = static_cast<int>(f.whole("ranks", 1));
  l.hosts = static_cast<int>(f.whole("hosts", 1));
  if (l.hosts > l.ranks) {
    Fields::fail(f.path("hosts"), fmt::format("at most 'ranks' ({})", l.ranks),
                 f.required("hosts"));
  }
  l.label = f.text_or("label", "");
  l.alpha_s = f.amount("alpha_s");
  l.beta_s_per_byte = f.amount("beta_s_per_byte");
  l.max_relative_error = f.amount_or("max_relative_error", 0);
  const json& points = f.array("points", true);
  for (size_t i = 0; i < points.size(); ++i) {
    Fields p(points[i], fmt::format("{}[{}]", f.path("points"), i));
    l.points.push_back({p.whole("bytes", 0), p.amount("seconds")});
  }
  return l;
}

Profile parse_document(const json& doc) {
  if (!doc.is_object()) {
    throw InvalidArgument(fmt::format("the document must be a JSON object (got {})", doc.dump()));
  }
  Fields top(doc, "");
  const json* format = top.find("format");
  if (format == nullptr || !format->is_string() || format->get<std::string>() != kProfileFormat) {
    throw InvalidArgument(fmt::format("'format' must be \"{}\" (got {})", kProfileFormat,
                                      format ? format->dump() : "nothing"));
  }
  const int64_t version = top.whole("version", 0);
  if (version != kProfileVersion) {
    throw InvalidArgument(
        fmt::format("'version' is {}; this Tandem reads version {}", version, kProfileVersion));
  }
  Profile p;
  if (const json* compute = top.find("compute"); compute && !compute->is_null()) {
    p.compute = parse_compute(Fields(*compute, "compute"));
  }
  const json& links = top.array("links", true);
  for (size_t i = 0; i < links.size(); ++i) {
    p.links.push_back(parse_link(Fields(links[i], fmt::format("links[{}]", i))));
  }
  return p;
}

// ---- writing ---------------------------------------------------------------

json layer_json(const LayerProfile& l) {
  return {{"name", l.name},
          {"forward_s", l.forward_s},
          {"backward_s", l.backward_s},
          {"forward_spread_s", l.forward_spread_s},
          {"backward_spread_s", l.backward_spread_s},
          {"param_bytes", l.param_bytes},
          {"grad_bytes", l.grad_bytes},
          {"activation_bytes", l.activation_bytes},
          {"output_bytes", l.output_bytes}};
}

json compute_json(const ComputeProfile& c) {
  json layers = json::array();
  for (const auto& l : c.layers) layers.push_back(layer_json(l));
  return {{"model", c.model},
          {"model_version", c.model_version},
          {"dtype", c.dtype},
          {"batch_size", c.batch_size},
          {"threads", c.threads},
          {"steps", c.steps},
          {"layers", std::move(layers)},
          {"buffer_bytes", c.buffer_bytes},
          {"optimizer_s", c.optimizer_s},
          {"other_s", c.other_s},
          {"step_s", c.step_s},
          {"step_spread_s", c.step_spread_s},
          {"step_times_s", c.step_times_s}};
}

json link_json(const LinkFit& l) {
  json points = json::array();
  for (const auto& p : l.points) points.push_back({{"bytes", p.bytes}, {"seconds", p.seconds}});
  return {{"transport", std::string(name_of(l.transport))},
          {"op", std::string(name_of(l.op))},
          {"algorithm", std::string(name_of(l.algorithm))},
          {"ranks", l.ranks},
          {"hosts", l.hosts},
          {"label", l.label},
          {"alpha_s", l.alpha_s},
          {"beta_s_per_byte", l.beta_s_per_byte},
          {"max_relative_error", l.max_relative_error},
          {"points", std::move(points)}};
}

}  // namespace

std::string_view name_of(Transport t) { return name_in(kTransports, t); }
std::string_view name_of(LinkOp op) { return name_in(kLinkOps, op); }
std::string_view name_of(Algorithm a) { return name_in(kAlgorithms, a); }

Transport parse_transport(std::string_view text, std::string_view field) {
  return parse_in(kTransports, text, field);
}
LinkOp parse_link_op(std::string_view text, std::string_view field) {
  return parse_in(kLinkOps, text, field);
}
Algorithm parse_algorithm(std::string_view text, std::string_view field) {
  return parse_in(kAlgorithms, text, field);
}

int64_t ComputeProfile::param_bytes() const {
  int64_t sum = 0;
  for (const auto& l : layers) sum += l.param_bytes;
  return sum;
}
double ComputeProfile::forward_s() const {
  double sum = 0;
  for (const auto& l : layers) sum += l.forward_s;
  return sum;
}
double ComputeProfile::backward_s() const {
  double sum = 0;
  for (const auto& l : layers) sum += l.backward_s;
  return sum;
}

// The points at the largest and the second largest size (distinct sizes).
static std::pair<LinkFit::Point, LinkFit::Point> two_largest(const std::vector<LinkFit::Point>& points) {
  LinkFit::Point top = points[0];
  for (const auto& p : points) {
    if (p.bytes > top.bytes) top = p;
  }
  LinkFit::Point next{.bytes = -1, .seconds = 0};
  for (const auto& p : points) {
    if (p.bytes < top.bytes && p.bytes > next.bytes) next = p;
  }
  return {next, top};
}

// Note [Relative least squares]: the sweep spans four decades of sizes, and
// plain least squares lets the largest sizes decide alone, leaving the small
// ones (whose time is mostly alpha) far off. Weighting each point by
// 1/seconds^2 minimises the relative error instead, so every size counts
// alike; exact points are recovered either way.
void fit_alpha_beta(LinkFit& fit) {
  const std::string what = fmt::format("fit_alpha_beta: {} {} {}", name_of(fit.transport),
                                       name_of(fit.op), name_of(fit.algorithm));
  double s = 0, sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (const auto& p : fit.points) {
    TANDEM_CHECK(p.bytes >= 0 && p.seconds > 0 && std::isfinite(p.seconds),
                 "{}: every point needs bytes >= 0 and seconds > 0 (got {} bytes, {} s)", what,
                 p.bytes, p.seconds);
    const double x = static_cast<double>(p.bytes), w = 1.0 / (p.seconds * p.seconds);
    s += w;
    sx += w * x;
    sy += w * p.seconds;
    sxx += w * x * x;
    sxy += w * x * p.seconds;
  }
  const double det = s * sxx - sx * sx;
  TANDEM_CHECK(fit.points.size() >= 2 && det > 1e-12 * s * sxx,
               "{}: needs points at two or more distinct sizes (got {} points)", what,
               fit.points.size());
  double beta = (s * sxy - sx * sy) / det;
  double alpha = (sy - beta * sx) / s;
  if (alpha < 0) {  // a line through the origin: latency too small to see
    alpha = 0;
    beta = sxy / sxx;
  }
  if (beta <= 0) {
    // Noise at the small sizes (a Gloo all_reduce's latency swings by 2x)
    // can tilt the line down. A link still moves bytes at a finite speed, so
    // take the slope between the two largest sizes, where bytes dominate,
    // and the weighted mean of what it leaves as alpha; only when even those
    // were not slower is it latency alone.
    const auto [large, larger] = two_largest(fit.points);
    beta = (larger.seconds - large.seconds) / static_cast<double>(larger.bytes - large.bytes);
    if (beta <= 0) beta = 0;
    alpha = 0;
    for (const auto& p : fit.points) {
      alpha += (p.seconds - beta * static_cast<double>(p.bytes)) / (p.seconds * p.seconds);
    }
    alpha = std::max(alpha / s, 0.0);
  }
  fit.alpha_s = alpha;
  fit.beta_s_per_byte = beta;
  fit.max_relative_error = 0;
  for (const auto& p : fit.points) {
    const double err = std::abs(fit.seconds(static_cast<double>(p.bytes)) - p.seconds) / p.seconds;
    fit.max_relative_error = std::max(fit.max_relative_error, err);
  }
}

nlohmann::json to_json(const Profile& profile) {
  json doc = {{"format", std::string(kProfileFormat)}, {"version", profile.version}};
  if (profile.compute) doc["compute"] = compute_json(*profile.compute);
  json links = json::array();
  for (const auto& l : profile.links) links.push_back(link_json(l));
  doc["links"] = std::move(links);
  return doc;
}

Profile parse_profile(const nlohmann::json& doc, std::string_view source) {
  try {
    return parse_document(doc);
  } catch (const InvalidArgument& e) {
    throw InvalidArgument(fmt::format("profile '{}': {}", source, e.what()));
  } catch (const json::exception& e) {
    throw InvalidArgument(fmt::format("profile '{}': {}", source, e.what()));
  }
}

Profile read_profile(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    throw InvalidArgument(fmt::format("cannot read profile '{}': {}", path, std::strerror(errno)));
  }
  json doc;
  try {
    doc = json::parse(in);
  } catch (const json::parse_error& e) {
    throw InvalidArgument(fmt::format("profile '{}' is not JSON: {}", path, e.what()));
  }
  return parse_profile(doc, path);
}

void write_profile(const Profile& profile, const std::string& path) {
  const std::string text = to_json(profile).dump(2) + "\n";
  const std::string tmp = fmt::format("{}.tmp.{}", path, ::getpid());
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << text;
    out.flush();
    if (!out) {
      const int err = errno;
      std::remove(tmp.c_str());
      throw Error(fmt::format("cannot write profile '{}': {}", path, std::strerror(err)));
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::remove(tmp.c_str());
    throw Error(fmt::format("cannot write profile '{}': {}", path, ec.message()));
  }
}

Profile merge_profiles(const Profile& a, const Profile& b) {
  TANDEM_CHECK(!(a.compute && b.compute),
               "merge_profiles: both profiles have a compute part (models '{}' and '{}'); merge "
               "one compute profile with links profiles",
               a.compute->model, b.compute->model);
  Profile out;
  out.compute = a.compute ? a.compute : b.compute;
  out.links = a.links;
  out.links.insert(out.links.end(), b.links.begin(), b.links.end());
  return out;
}

}  // namespace tandem::sim
