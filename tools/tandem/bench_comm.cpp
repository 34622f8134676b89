#include "bench_comm.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/zeros.h>
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>

#include "tandem/comm/backend.h"
#include "tandem/comm/rendezvous.h"
#include "tandem/core/check.h"

namespace tandem::tools {
namespace {

using Seconds = std::chrono::duration<double>;

at::ScalarType parse_dtype(const std::string& d) {
  static const std::map<std::string, at::ScalarType> kTypes = {
      {"float32", at::kFloat}, {"float64", at::kDouble}, {"bfloat16", at::kBFloat16},
      {"float16", at::kHalf},  {"int32", at::kInt},      {"int64", at::kLong}};
  auto it = kTypes.find(d);
  TANDEM_CHECK(it != kTypes.end(),
               "bench comm: --dtype {} is not one of float32, float64, bfloat16, float16, int32, "
               "int64",
               d);
  return it->second;
}

// nccl-tests' bus bandwidth factors: what each rank's links must carry.
double bus_factor(const std::string& op, int n) {
  if (n == 1) return 0.0;
  if (op == "all_reduce") return 2.0 * (n - 1) / n;
  if (op == "broadcast") return 1.0;
  return static_cast<double>(n - 1) / n;  // reduce_scatter, all_gather
}

struct Subject {
  std::string name;                    // as printed
  std::shared_ptr<Communicator> comm;  // null for mpi-raw
};

// One timed pass of `iters` operations; returns seconds per operation, the
// slowest rank's (all ranks agree on it).
double time_pass(const Subject& s, Communicator& sync, const std::string& op, int64_t count,
                 at::ScalarType dtype, int iters, int warmup) {
  const int n = sync.size();
  const int r = sync.rank();
  at::Tensor full = at::zeros({count}, dtype);
  auto mine = shard_range(count, n, r);
  at::Tensor shard = at::zeros({mine.numel}, dtype);
  auto once = [&] {
    if (!s.comm) {
      mpi_raw_all_reduce(full);
    } else if (op == "all_reduce") {
      s.comm->all_reduce(full);
    } else if (op == "broadcast") {
      s.comm->broadcast(full, 0);
    } else if (op == "reduce_scatter") {
      s.comm->reduce_scatter(shard, full);
    } else {
      s.comm->all_gather(full, shard);
    }
  };
  for (int i = 0; i < warmup; ++i) once();
  sync.barrier();
  auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i) once();
  double mine_s = Seconds(std::chrono::steady_clock::now() - start).count() / iters;
  at::Tensor t = at::full({1}, mine_s, at::kDouble);
  sync.all_reduce(t, ReduceOp::kMax);
  return t.item<double>();
}

std::vector<std::string> expand_backends(const std::vector<std::string>& asked,
                                         const Rendezvous& rdzv) {
  std::vector<std::string> out;
  const bool under_mpi = rdzv.info().source == "mpi" && mpi_available();
  for (const auto& b : asked) {
    if (b == "all") {
      out.push_back("auto");
      if (rdzv.hosts() == 1) out.push_back("shm");
      out.push_back("gloo");
      if (under_mpi) {
        out.push_back("mpi");
        out.push_back("mpi-raw");
      }
    } else {
      TANDEM_CHECK(b == "auto" || b == "shm" || b == "gloo" || b == "mpi" || b == "mpi-raw",
                   "bench comm: --backend {} is not one of auto, shm, gloo, mpi, mpi-raw, all", b);
      TANDEM_CHECK((b != "mpi" && b != "mpi-raw") || under_mpi,
                   "bench comm: --backend {} needs a launch under mpirun (and an MPI build)", b);
      out.push_back(b);
    }
  }
  return out;
}

std::vector<std::string> expand_ops(const std::vector<std::string>& asked) {
  static const std::vector<std::string> kAll = {"all_reduce", "reduce_scatter", "all_gather",
                                                "broadcast"};
  std::vector<std::string> out;
  for (const auto& o : asked) {
    if (o == "all") return kAll;
    TANDEM_CHECK(std::find(kAll.begin(), kAll.end(), o) != kAll.end(),
                 "bench comm: --op {} is not one of all_reduce, reduce_scatter, all_gather, "
                 "broadcast, all",
                 o);
    out.push_back(o);
  }
  return out;
}

std::string human_bytes(int64_t b) {
  if (b >= (1 << 20)) return fmt::format("{}M", b >> 20);
  if (b >= (1 << 10)) return fmt::format("{}K", b >> 10);
  return fmt::format("{}", b);
}

}  // namespace

int run_comm_bench(const CommBenchOptions& o) {
  TANDEM_CHECK(o.min_bytes >= 4 && o.max_bytes >= o.min_bytes,
               "bench comm: need 4 <= --min-bytes <= --max-bytes (got {} and {})", o.min_bytes,
               o.max_bytes);
  TANDEM_CHECK(o.step_factor >= 2, "bench comm: --step-factor must be >= 2 (got {})",
               o.step_factor);
  TANDEM_CHECK(o.iters >= 0 && o.warmup >= 0 && o.rounds >= 1,
               "bench comm: --iters, --warmup must be >= 0 and --rounds >= 1");
  at::ScalarType dtype = parse_dtype(o.dtype);
  const int64_t elem = static_cast<int64_t>(c10::elementSize(dtype));
  auto ops = expand_ops(o.ops);

  Rendezvous rdzv(read_rendezvous_env(), Millis(120'000));
  const Millis timeout(300'000);
  std::vector<Subject> subjects;
  for (const auto& b : expand_backends(o.backends, rdzv)) {
    if (b == "mpi-raw") {
      subjects.push_back({"mpi-raw", nullptr});
    } else {
      auto c = rdzv.communicator(parse_backend(b), timeout);
      subjects.push_back({b == "auto" ? "auto:" + c->backend() : c->backend(), c});
    }
  }
  // Barriers and the max-time reduction use the first Tandem communicator.
  auto sync_it = std::find_if(subjects.begin(), subjects.end(), [](auto& s) { return s.comm; });
  std::shared_ptr<Communicator> sync =
      sync_it != subjects.end() ? sync_it->comm : rdzv.communicator(Backend::kGloo, timeout);
  const int n = sync->size();
  const bool lead = sync->rank() == 0;
  const bool has_raw =
      std::any_of(subjects.begin(), subjects.end(), [](auto& s) { return !s.comm; });

  std::ofstream json_file;
  std::ostream* json = nullptr;
  if (lead && !o.json.empty()) {
    if (o.json == "-") {
      json = &std::cout;
    } else {
      json_file.open(o.json, std::ios::app);
      TANDEM_CHECK(json_file.good(), "bench comm: cannot write --json file '{}'", o.json);
      json = &json_file;
    }
  }
  if (lead) {
    std::cout << fmt::format(
        "# tandem bench comm: {} ranks on {} host(s), {}, median of {} "
        "interleaved rounds\n",
        n, rdzv.hosts(), o.dtype, o.rounds);
    std::cout << fmt::format("{:>16} {:>15} {:>8} {:>11} {:>6} {:>11} {:>10} {:>10}{}\n", "backend",
                             "op", "bytes", "count", "iters", "time_us", "algbw_GB/s", "busbw_GB/s",
                             has_raw ? "  x_mpi-raw" : "");
  }
  for (const auto& op : ops) {
    for (int64_t bytes = o.min_bytes; bytes <= o.max_bytes; bytes *= o.step_factor) {
      int64_t count = std::max<int64_t>(bytes / elem, 1);
      int iters = o.iters > 0 ? o.iters
                              : static_cast<int>(std::clamp<int64_t>((64 << 20) / bytes, 5, 1000));
      std::vector<std::vector<double>> times(subjects.size());
      for (int round = 0; round < o.rounds; ++round) {
        for (size_t i = 0; i < subjects.size(); ++i) {
          if (!subjects[i].comm && op != "all_reduce") continue;
          times[i].push_back(time_pass(subjects[i], *sync, op, count, dtype, iters, o.warmup));
        }
      }
      double raw_busbw = 0;
      std::vector<double> busbw(subjects.size(), 0.0);
      std::vector<double> median(subjects.size(), 0.0);
      for (size_t i = 0; i < subjects.size(); ++i) {
        if (times[i].empty()) continue;
        std::sort(times[i].begin(), times[i].end());
        median[i] = times[i][times[i].size() / 2];
        busbw[i] = static_cast<double>(count * elem) / median[i] / 1e9 * bus_factor(op, n);
        if (!subjects[i].comm) raw_busbw = busbw[i];
      }
      if (!lead) continue;
      for (size_t i = 0; i < subjects.size(); ++i) {
        if (times[i].empty()) continue;
        double algbw = static_cast<double>(count * elem) / median[i] / 1e9;
        double ratio = raw_busbw > 0 ? busbw[i] / raw_busbw : 0.0;
        std::cout << fmt::format(
            "{:>16} {:>15} {:>8} {:>11} {:>6} {:>11.1f} {:>10.2f} {:>10.2f}{}\n", subjects[i].name,
            op, human_bytes(count * elem), count, iters, median[i] * 1e6, algbw, busbw[i],
            raw_busbw > 0 ? fmt::format("  {:>9.2f}", ratio) : "");
        if (json) {
          nlohmann::json j = {{"bench", "comm"},
                              {"backend", subjects[i].name},
                              {"op", op},
                              {"ranks", n},
                              {"hosts", rdzv.hosts()},
                              {"dtype", o.dtype},
                              {"bytes", count * elem},
                              {"count", count},
                              {"iters", iters},
                              {"rounds", o.rounds},
                              {"time_us", median[i] * 1e6},
                              {"algbw_gbps", algbw},
                              {"busbw_gbps", busbw[i]}};
          if (raw_busbw > 0) j["busbw_vs_mpi_raw"] = ratio;
          *json << j.dump() << "\n";
        }
      }
      std::cout.flush();
    }
  }
  sync->barrier();
  return 0;
}

void add_bench_comm(CLI::App& bench, int& exit_code) {
  auto opts = std::make_shared<CommBenchOptions>();
  auto* cmd = bench.add_subcommand(
      "comm", "Collective bandwidth per backend, op and size (run under tandem-run or mpirun)");
  cmd->add_option("--backend", opts->backends,
                  "auto|shm|gloo|mpi|mpi-raw|all (repeatable); mpi and mpi-raw need mpirun")
      ->delimiter(',');
  cmd->add_option("--op", opts->ops, "all_reduce|reduce_scatter|all_gather|broadcast|all")
      ->delimiter(',');
  cmd->add_option("--min-bytes", opts->min_bytes, "smallest message (default 4096)");
  cmd->add_option("--max-bytes", opts->max_bytes, "largest message (default 67108864)");
  cmd->add_option("--step-factor", opts->step_factor, "size multiplier between rows (default 4)");
  cmd->add_option("--iters", opts->iters, "timed iterations per pass (default: by size)");
  cmd->add_option("--warmup", opts->warmup, "untimed iterations per pass (default 2)");
  cmd->add_option("--rounds", opts->rounds, "interleaved passes; the median counts (default 3)");
  cmd->add_option("--dtype", opts->dtype, "float32|float64|bfloat16|float16|int32|int64");
  cmd->add_option("--json", opts->json, "append JSON lines to FILE ('-': stdout)");
  cmd->callback([opts, &exit_code] { exit_code = run_comm_bench(*opts); });
}

}  // namespace tandem::tools
