#include "tandem/launch/launch_options.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <climits>
#include <cmath>
#include <string_view>
#include <utility>

#include "tandem/core/error.h"

namespace tandem::launch {
namespace {

// Flag errors are shown to people typing a command, so they carry no
// source location (unlike TANDEM_CHECK) and always point at --help.
template <typename... Args>
[[noreturn]] void usage_error(fmt::format_string<Args...> f, Args&&... args) {
  throw InvalidArgument(
      fmt::format("{}; see 'tandem-run --help'.", fmt::format(f, std::forward<Args>(args)...)));
}

int parse_int(std::string_view flag, const std::string& text) {
  long long value = 0;
  const char* begin = text.data();
  const char* end = begin + text.size();
  auto [ptr, ec] = std::from_chars(begin, end, value);
  if (ec != std::errc() || ptr != end || text.empty()) {
    usage_error("{} must be a whole number (got '{}')", flag, text);
  }
  if (value < INT_MIN || value > INT_MAX) {
    usage_error("{} is out of range (got {})", flag, text);
  }
  return static_cast<int>(value);
}

std::chrono::milliseconds parse_seconds(std::string_view flag, const std::string& text) {
  double seconds = 0;
  const char* begin = text.data();
  const char* end = begin + text.size();
  auto [ptr, ec] = std::from_chars(begin, end, seconds);
  // One day is far beyond any sensible grace period and keeps the
  // conversion to milliseconds exact.
  constexpr double kMaxSeconds = 86400;
  if (ec != std::errc() || ptr != end || text.empty() || !std::isfinite(seconds) || seconds <= 0 ||
      seconds > kMaxSeconds) {
    usage_error("{} must be a number of seconds in (0, {}] (got '{}')", flag, kMaxSeconds, text);
  }
  auto ms = static_cast<long long>(std::llround(seconds * 1000));
  return std::chrono::milliseconds(std::max(ms, 1LL));
}

// --nnodes: "M" or torchrun's elastic "MIN:MAX".
void parse_nnodes(const std::string& text, LaunchOptions& o) {
  const size_t colon = text.find(':');
  if (colon == std::string::npos) {
    o.nnodes = parse_int("--nnodes", text);
    o.min_nnodes = o.nnodes;
    return;
  }
  o.min_nnodes = parse_int("--nnodes (MIN of MIN:MAX)", text.substr(0, colon));
  o.nnodes = parse_int("--nnodes (MAX of MIN:MAX)", text.substr(colon + 1));
  if (o.min_nnodes < 1 || o.min_nnodes > o.nnodes) {
    usage_error("--nnodes MIN:MAX needs 1 <= MIN <= MAX (got '{}')", text);
  }
}

bool has_space(const std::string& s) { return s.find_first_of(" \t\r\n") != std::string::npos; }

void validate_elastic(const LaunchOptions& o) {
  if (o.min_nnodes < 1 || o.min_nnodes > o.nnodes) {
    usage_error("--nnodes MIN:MAX needs 1 <= MIN <= MAX (got {}:{})", o.min_nnodes, o.nnodes);
  }
  if (o.min_workers < 1) usage_error("--min-workers must be at least 1 (got {})", o.min_workers);
  if (o.max_workers < o.min_workers) {
    usage_error("--max-workers {} is below --min-workers {}", o.max_workers, o.min_workers);
  }
  if (o.max_workers < o.nproc_per_node) {
    usage_error("--max-workers {} is below --nproc-per-node {}: this node alone starts {} workers",
                o.max_workers, o.nproc_per_node, o.nproc_per_node);
  }
  if (o.min_workers > o.nnodes * o.nproc_per_node) {
    usage_error(
        "--min-workers {} is more than the {} workers tandem-run starts (--nnodes {} times "
        "--nproc-per-node {}), so the job could not start",
        o.min_workers, o.nnodes * o.nproc_per_node, o.nnodes, o.nproc_per_node);
  }
  if (o.heartbeat_timeout.count() <= 0) {
    usage_error("--heartbeat-timeout must be positive (got {} ms)", o.heartbeat_timeout.count());
  }
}

}  // namespace

LaunchOptions make_launch_options(const LaunchFlags& flags) {
  LaunchOptions o;
  if (flags.nproc_per_node) o.nproc_per_node = parse_int("--nproc-per-node", *flags.nproc_per_node);
  if (flags.nnodes) parse_nnodes(*flags.nnodes, o);
  if (flags.node_rank) o.node_rank = parse_int("--node-rank", *flags.node_rank);
  if (flags.master_addr) o.master_addr = *flags.master_addr;
  if (flags.master_port) o.master_port = parse_int("--master-port", *flags.master_port);
  if (flags.max_restarts) o.max_restarts = parse_int("--max-restarts", *flags.max_restarts);
  if (flags.log_dir) o.log_dir = *flags.log_dir;
  if (flags.grace_period) o.grace_period = parse_seconds("--grace-period", *flags.grace_period);
  o.prefix_output = !flags.no_prefix;
  o.command = flags.command;
  o.elastic = flags.min_workers || flags.max_workers || o.min_nnodes < o.nnodes;
  if (o.nnodes >= 1 && o.nproc_per_node >= 1 &&
      static_cast<long long>(o.nnodes) * o.nproc_per_node <= INT_MAX) {
    o.max_workers = o.nnodes * o.nproc_per_node;
    o.min_workers = o.min_nnodes * o.nproc_per_node;
  }
  if (flags.max_workers) o.max_workers = parse_int("--max-workers", *flags.max_workers);
  if (flags.min_workers) {
    o.min_workers = parse_int("--min-workers", *flags.min_workers);
  } else if (flags.max_workers && o.min_nnodes == o.nnodes) {
    o.min_workers = o.max_workers;
  }
  if (flags.heartbeat_timeout) {
    if (!o.elastic) {
      usage_error(
          "--heartbeat-timeout applies to elastic jobs only; add --min-workers/--max-workers "
          "or --nnodes MIN:MAX");
    }
    o.heartbeat_timeout = parse_seconds("--heartbeat-timeout", *flags.heartbeat_timeout);
  }
  validate(o);
  return o;
}

void validate(const LaunchOptions& o) {
  if (o.nproc_per_node < 1) {
    usage_error("--nproc-per-node must be at least 1 (got {})", o.nproc_per_node);
  }
  if (o.nnodes < 1) usage_error("--nnodes must be at least 1 (got {})", o.nnodes);
  if (static_cast<long long>(o.nnodes) * o.nproc_per_node > INT_MAX) {
    usage_error("--nnodes {} times --nproc-per-node {} is too many workers", o.nnodes,
                o.nproc_per_node);
  }
  if (o.node_rank < 0 || o.node_rank >= o.nnodes) {
    usage_error("--node-rank must be in [0, {}) for --nnodes {} (got {})", o.nnodes, o.nnodes,
                o.node_rank);
  }
  if (o.master_addr.empty() || has_space(o.master_addr)) {
    usage_error("--master-addr must be a host name or IP address (got '{}')", o.master_addr);
  }
  if (o.master_port && (*o.master_port < 1 || *o.master_port > 65535)) {
    usage_error("--master-port must be in [1, 65535] (got {})", *o.master_port);
  }
  if (!o.master_port && o.nnodes > 1) {
    usage_error(
        "--master-port is required with --nnodes {}: every node must use the same port, so "
        "tandem-run cannot pick a free one",
        o.nnodes);
  }
  if (o.elastic) validate_elastic(o);
  if (o.max_restarts < 0) usage_error("--max-restarts must be at least 0 (got {})", o.max_restarts);
  if (o.log_dir && o.log_dir->empty()) usage_error("--log-dir must not be empty");
  if (o.grace_period.count() <= 0) {
    usage_error("--grace-period must be positive (got {} ms)", o.grace_period.count());
  }
  if (o.command.empty()) {
    usage_error(
        "missing PROGRAM: put the command to run after '--', e.g. "
        "'tandem-run --nproc-per-node 2 -- ./train --epochs 3'");
  }
  if (o.command.front().empty()) usage_error("PROGRAM must not be an empty string");
}

namespace {

std::string name_of(const std::string& entry) { return entry.substr(0, entry.find('=')); }

}  // namespace

std::vector<std::string> environment_with(const std::vector<std::string>& base,
                                          const std::vector<std::string>& set) {
  auto is_set = [&](const std::string& name) {
    return std::any_of(set.begin(), set.end(),
                       [&](const std::string& entry) { return name_of(entry) == name; });
  };
  std::vector<std::string> env;
  env.reserve(base.size() + set.size());
  for (const auto& entry : base) {
    if (!is_set(name_of(entry))) env.push_back(entry);
  }
  env.insert(env.end(), set.begin(), set.end());
  return env;
}

std::vector<std::string> worker_environment(const std::vector<std::string>& base,
                                            const LaunchOptions& o, const WorkerIdentity& w) {
  const int rank = o.node_rank * o.nproc_per_node + w.local_rank;
  std::vector<std::string> env =
      environment_with(base, {
                                 "MASTER_ADDR=" + o.master_addr,
                                 "MASTER_PORT=" + std::to_string(w.master_port),
                                 "RANK=" + std::to_string(rank),
                                 "WORLD_SIZE=" + std::to_string(o.world_size()),
                                 "LOCAL_RANK=" + std::to_string(w.local_rank),
                                 "LOCAL_WORLD_SIZE=" + std::to_string(o.nproc_per_node),
                                 "GROUP_RANK=" + std::to_string(o.node_rank),
                                 "TANDEM_NODE_RANK=" + std::to_string(o.node_rank),
                                 "TANDEM_RESTART_COUNT=" + std::to_string(w.restart_count),
                                 "TORCHELASTIC_RESTART_COUNT=" + std::to_string(w.restart_count),
                             });
  // An inherited TANDEM_STORE_SERVED (a job started inside a tandem-run
  // worker) must not tell these workers that someone serves their store.
  std::erase_if(env, [](const std::string& e) { return name_of(e) == "TANDEM_STORE_SERVED"; });
  if (w.store_served) env.push_back(fmt::format("TANDEM_STORE_SERVED={}", 1));
  if (o.elastic) {
    // A replacement keeps its original rank but may join any generation;
    // the worker side ignores RANK/WORLD_SIZE under TANDEM_ELASTIC_JOIN.
    const int id = w.worker_id.value_or(rank);
    std::vector<std::string> elastic = {
        fmt::format("TANDEM_ELASTIC={}:{}", o.min_workers, o.max_workers),
        fmt::format("TANDEM_WORKER_ID={}", id),
        fmt::format("TANDEM_HEARTBEAT_TIMEOUT={:g}",
                    static_cast<double>(o.heartbeat_timeout.count()) / 1000.0),
        fmt::format("TANDEM_ELASTIC_JOIN={}", w.joining ? 1 : 0),
    };
    if (w.joining) elastic.push_back(fmt::format("WORLD_SIZE={}", o.max_workers));
    env = environment_with(env, elastic);
  }
  return with_worker_defaults(std::move(env));
}

std::vector<std::string> with_worker_defaults(std::vector<std::string> env) {
  for (const std::string entry :
       {"OMP_NUM_THREADS=1", "OPENBLAS_NUM_THREADS=1", "GLIBC_TUNABLES=glibc.malloc.hugetlb=1"}) {
    const std::string name = name_of(entry);
    const bool given = std::any_of(env.begin(), env.end(),
                                   [&](const std::string& e) { return name_of(e) == name; });
    if (!given) env.push_back(entry);
  }
  return env;
}

}  // namespace tandem::launch
