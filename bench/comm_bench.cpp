// `tandem bench comm`: collective bandwidth, like nccl-tests. Run under
// tandem-run or mpirun; rank 0 prints a table (and JSON lines) of bytes,
// time, algbw and busbw per backend, op and size. Backends are measured
// side by side, size by size, in the same processes, since the machines are
// noisy; `mpi-raw` is a plain MPI_Allreduce (bench/mpi_raw.h) beside them.
#include <ATen/ops/full.h>
#include <ATen/ops/zeros.h>
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "bench/flag_values.h"
#include "bench/mpi_raw.h"
#include "bench/subcommands.h"
#include "bench/training_steps.h"
#include "tandem/comm/backend.h"
#include "tandem/comm/rendezvous.h"
#include "tandem/core/check.h"

namespace tandem::bench {
namespace {

// What --backend may name: the library's backends, the raw MPI baseline, all.
enum class BackendChoice { kAuto, kShm, kGloo, kMpi, kMpiRaw, kAll };
constexpr Choice<BackendChoice> kBackends[] = {{"auto", BackendChoice::kAuto},      {"shm", BackendChoice::kShm},
                                         {"gloo", BackendChoice::kGloo},      {"mpi", BackendChoice::kMpi},
                                         {"mpi-raw", BackendChoice::kMpiRaw}, {"all", BackendChoice::kAll}};

enum class Op { kAllReduce, kReduceScatter, kAllGather, kBroadcast, kAll };
constexpr Choice<Op> kOps[] = {{"all_reduce", Op::kAllReduce},
                               {"reduce_scatter", Op::kReduceScatter},
                               {"all_gather", Op::kAllGather},
                               {"broadcast", Op::kBroadcast},
                               {"all", Op::kAll}};

constexpr Choice<at::ScalarType> kDtypes[] = {{"float32", at::kFloat},     {"float64", at::kDouble},
                                              {"bfloat16", at::kBFloat16}, {"float16", at::kHalf},
                                              {"int32", at::kInt},         {"int64", at::kLong}};

struct Options {
  std::vector<BackendChoice> backends = {BackendChoice::kAuto};
  std::vector<Op> ops = {Op::kAllReduce};
  int64_t min_bytes = 4 << 10;
  int64_t max_bytes = 64 << 20;
  int step_factor = 4;
  int iters = 0;  // 0: chosen per size (about 64 MiB moved, 5..1000)
  int warmup = 2;
  int rounds = 3;  // interleaved repetitions; the median is reported
  at::ScalarType dtype = at::kFloat;
  std::string json;  // file for JSON lines ("-": stdout)
};

// nccl-tests' bus bandwidth factors: what each rank's links must carry.
double bus_factor(Op op, int n) {
  if (n == 1) return 0.0;
  if (op == Op::kAllReduce) return 2.0 * (n - 1) / n;
  if (op == Op::kBroadcast) return 1.0;
  return static_cast<double>(n - 1) / n;  // reduce_scatter, all_gather
}

struct Subject {
  std::string name;                    // as printed
  std::shared_ptr<Communicator> comm;  // null for mpi-raw
};

// One timed pass of `iters` operations; returns seconds per operation, the
// slowest rank's (all ranks agree on it).
double time_pass(const Subject& s, Communicator& sync, Op op, int64_t count, at::ScalarType dtype,
                 int iters, int warmup) {
  at::Tensor full = at::zeros({count}, dtype);
  at::Tensor shard = at::zeros({shard_range(count, sync.size(), sync.rank()).numel}, dtype);
  auto once = [&] {
    if (!s.comm) {
      mpi_raw_all_reduce(full);
    } else if (op == Op::kAllReduce) {
      s.comm->all_reduce(full);
    } else if (op == Op::kBroadcast) {
      s.comm->broadcast(full, 0);
    } else if (op == Op::kReduceScatter) {
      s.comm->reduce_scatter(shard, full);
    } else {
      s.comm->all_gather(full, shard);
    }
  };
  for (int i = 0; i < warmup; ++i) once();
  sync.barrier();
  auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i) once();
  double mine_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  at::Tensor t = at::full({1}, mine_s / iters, at::kDouble);
  sync.all_reduce(t, ReduceOp::kMax);
  return t.item<double>();
}

std::vector<BackendChoice> expand_backends(const std::vector<BackendChoice>& asked, const Rendezvous& rdzv) {
  std::vector<BackendChoice> out;
  const bool under_mpi = rdzv.info().source == "mpi" && mpi_available();
  for (BackendChoice b : asked) {
    if (b == BackendChoice::kAll) {
      out.push_back(BackendChoice::kAuto);
      if (rdzv.hosts() == 1) out.push_back(BackendChoice::kShm);
      out.push_back(BackendChoice::kGloo);
      if (under_mpi) out.insert(out.end(), {BackendChoice::kMpi, BackendChoice::kMpiRaw});
      continue;
    }
    TANDEM_CHECK((b != BackendChoice::kMpi && b != BackendChoice::kMpiRaw) || under_mpi,
                 "bench comm: --backend {} needs a launch under mpirun (and an MPI build)",
                 choice_name<BackendChoice>(b, kBackends));
    out.push_back(b);
  }
  return out;
}

std::vector<Op> expand_ops(const std::vector<Op>& asked) {
  if (std::find(asked.begin(), asked.end(), Op::kAll) == asked.end()) return asked;
  return {Op::kAllReduce, Op::kReduceScatter, Op::kAllGather, Op::kBroadcast};
}

std::string human_bytes(int64_t b) {
  if (b >= (1 << 20)) return fmt::format("{}M", b >> 20);
  if (b >= (1 << 10)) return fmt::format("{}K", b >> 10);
  return fmt::format("{}", b);
}

// The communicators to measure, and the one that times them (barriers and
// the max-time reduction): the first Tandem one, else a Gloo one.
struct Setup {
  std::vector<Subject> subjects;
  std::shared_ptr<Communicator> sync;
  std::shared_ptr<Communicator> mpi;  // keeps MPI initialised for mpi-raw
  bool has_raw = false;
};

Setup make_subjects(const Options& o, Rendezvous& rdzv, Millis timeout) {
  Setup s;
  for (BackendChoice b : expand_backends(o.backends, rdzv)) {
    if (b == BackendChoice::kMpiRaw) {
      s.subjects.push_back({"mpi-raw", nullptr});
      s.has_raw = true;
      continue;
    }
    auto c = rdzv.communicator(parse_backend(choice_name<BackendChoice>(b, kBackends)), timeout);
    s.subjects.push_back({b == BackendChoice::kAuto ? "auto:" + c->backend() : c->backend(), c});
    if (b == BackendChoice::kMpi) s.mpi = c;
  }
  if (s.has_raw && !s.mpi) s.mpi = rdzv.communicator(tandem::Backend::kMpi, timeout);
  auto first = std::find_if(s.subjects.begin(), s.subjects.end(), [](auto& x) { return x.comm; });
  s.sync = first != s.subjects.end() ? first->comm : rdzv.communicator(tandem::Backend::kGloo, timeout);
  return s;
}

// Rank 0's table and JSON lines.
class Report {
 public:
  Report(const Options& o, int ranks, int hosts, bool has_raw)
      : o_(o), ranks_(ranks), hosts_(hosts) {
    if (o.json == "-") {
      json_ = &std::cout;
    } else if (!o.json.empty()) {
      file_.open(o.json, std::ios::app);
      TANDEM_CHECK(file_.good(), "bench comm: cannot write --json file '{}'", o.json);
      json_ = &file_;
    }
    std::cout << fmt::format(
        "# tandem bench comm: {} ranks on {} host(s), {}, median of {} interleaved rounds\n", ranks,
        hosts, choice_name<at::ScalarType>(o.dtype, kDtypes), o.rounds);
    std::cout << fmt::format("{:>16} {:>15} {:>8} {:>11} {:>6} {:>11} {:>10} {:>10}{}\n", "backend",
                             "op", "bytes", "count", "iters", "time_us", "algbw_GB/s", "busbw_GB/s",
                             has_raw ? "  x_mpi-raw" : "");
  }

  // One row: `seconds` per operation of `count` elements; `raw_busbw` is
  // mpi-raw's at this size, or 0.
  void row(const std::string& backend, Op op, int64_t count, int iters, double seconds,
           double raw_busbw) {
    const int64_t bytes = count * static_cast<int64_t>(c10::elementSize(o_.dtype));
    const double algbw = static_cast<double>(bytes) / seconds / 1e9;
    const double busbw = algbw * bus_factor(op, ranks_);
    const double ratio = raw_busbw > 0 ? busbw / raw_busbw : 0.0;
    std::cout << fmt::format("{:>16} {:>15} {:>8} {:>11} {:>6} {:>11.1f} {:>10.2f} {:>10.2f}{}\n",
                             backend, choice_name<Op>(op, kOps), human_bytes(bytes), count, iters,
                             seconds * 1e6, algbw, busbw,
                             raw_busbw > 0 ? fmt::format("  {:>9.2f}", ratio) : "");
    if (!json_) return;
    nlohmann::json j = {{"bench", "comm"},
                        {"backend", backend},
                        {"op", choice_name<Op>(op, kOps)},
                        {"ranks", ranks_},
                        {"hosts", hosts_},
                        {"dtype", choice_name<at::ScalarType>(o_.dtype, kDtypes)},
                        {"bytes", bytes},
                        {"count", count},
                        {"iters", iters},
                        {"rounds", o_.rounds},
                        {"time_us", seconds * 1e6},
                        {"algbw_gbps", algbw},
                        {"busbw_gbps", busbw}};
    if (raw_busbw > 0) j["busbw_vs_mpi_raw"] = ratio;
    *json_ << j.dump() << "\n";
  }

  double busbw(Op op, int64_t count, double seconds) const {
    const double bytes = static_cast<double>(count * c10::elementSize(o_.dtype));
    return bytes / seconds / 1e9 * bus_factor(op, ranks_);
  }

 private:
  const Options& o_;
  int ranks_;
  int hosts_;
  std::ofstream file_;
  std::ostream* json_ = nullptr;
};

// Every subject at one op and size, in interleaved rounds; rank 0 reports
// the medians.
void measure_size(const Options& o, const Setup& s, Op op, int64_t bytes, Report* report) {
  const int64_t count =
      std::max<int64_t>(bytes / static_cast<int64_t>(c10::elementSize(o.dtype)), 1);
  const int iters =
      o.iters > 0 ? o.iters : static_cast<int>(std::clamp<int64_t>((64 << 20) / bytes, 5, 1000));
  std::vector<std::vector<double>> times(s.subjects.size());
  for (int round = 0; round < o.rounds; ++round) {
    for (size_t i = 0; i < s.subjects.size(); ++i) {
      if (!s.subjects[i].comm && op != Op::kAllReduce) continue;  // mpi-raw: all_reduce only
      times[i].push_back(time_pass(s.subjects[i], *s.sync, op, count, o.dtype, iters, o.warmup));
    }
  }
  if (!report) return;
  double raw_busbw = 0;
  for (size_t i = 0; i < s.subjects.size(); ++i) {
    if (!s.subjects[i].comm && !times[i].empty()) {
      raw_busbw = report->busbw(op, count, median(times[i]));
    }
  }
  for (size_t i = 0; i < s.subjects.size(); ++i) {
    if (times[i].empty()) continue;
    report->row(s.subjects[i].name, op, count, iters, median(times[i]), raw_busbw);
  }
  std::cout.flush();
}

int run(const Options& o) {
  TANDEM_CHECK(o.min_bytes >= 4 && o.max_bytes >= o.min_bytes,
               "bench comm: need 4 <= --min-bytes <= --max-bytes (got {} and {})", o.min_bytes,
               o.max_bytes);
  TANDEM_CHECK(o.step_factor >= 2, "bench comm: --step-factor must be >= 2 (got {})",
               o.step_factor);
  TANDEM_CHECK(o.iters >= 0 && o.warmup >= 0 && o.rounds >= 1,
               "bench comm: --iters, --warmup must be >= 0 and --rounds >= 1");
  Rendezvous rdzv(read_rendezvous_env(), Millis(120'000));
  const Setup s = make_subjects(o, rdzv, Millis(300'000));
  std::unique_ptr<Report> report;
  if (s.sync->rank() == 0) {
    report = std::make_unique<Report>(o, s.sync->size(), rdzv.hosts(), s.has_raw);
  }
  for (Op op : expand_ops(o.ops)) {
    for (int64_t bytes = o.min_bytes; bytes <= o.max_bytes; bytes *= o.step_factor) {
      measure_size(o, s, op, bytes, report.get());
    }
  }
  s.sync->barrier();
  return 0;
}

}  // namespace

void add_comm_bench(CLI::App& bench, int& exit_code) {
  auto o = std::make_shared<Options>();
  auto* cmd = bench.add_subcommand(
      "comm", "Collective bandwidth per backend, op and size (run under tandem-run or mpirun)");
  add_choice_list_flag<BackendChoice>(
      *cmd, "--backend", o->backends, kBackends,
      "auto|shm|gloo|mpi|mpi-raw|all (repeatable); mpi and mpi-raw need mpirun");
  add_choice_list_flag<Op>(*cmd, "--op", o->ops, kOps,
                           "all_reduce|reduce_scatter|all_gather|broadcast|all");
  add_int_flag(*cmd, "--min-bytes", o->min_bytes, "smallest message (default 4096)");
  add_int_flag(*cmd, "--max-bytes", o->max_bytes, "largest message (default 67108864)");
  add_int_flag(*cmd, "--step-factor", o->step_factor, "size multiplier between rows (default 4)");
  add_int_flag(*cmd, "--iters", o->iters, "timed iterations per pass (default: by size)");
  add_int_flag(*cmd, "--warmup", o->warmup, "untimed iterations per pass (default 2)");
  add_int_flag(*cmd, "--rounds", o->rounds, "interleaved passes; the median counts (default 3)");
  add_choice_flag<at::ScalarType>(*cmd, "--dtype", o->dtype, kDtypes,
                                  "float32|float64|bfloat16|float16|int32|int64");
  cmd->add_option("--json", o->json, "append JSON lines to FILE ('-': stdout)");
  cmd->callback([o, &exit_code] { exit_code = run(*o); });
}

}  // namespace tandem::bench
