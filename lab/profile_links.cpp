#include "lab/profile_links.h"

#include <ATen/ops/full.h>
#include <ATen/ops/zeros.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <memory>

#include "bench/training_steps.h"
#include "tandem/comm/backend.h"
#include "tandem/comm/rendezvous.h"
#include "tandem/core/check.h"

namespace tandem::lab {
namespace {

using sim::LinkOp;
using sim::Transport;

constexpr Millis kRendezvousTimeout{120'000};
constexpr Millis kOpTimeout{300'000};
constexpr int64_t kElementBytes = 4;  // float32

Backend backend_of(Transport t) {
  switch (t) {
    case Transport::kShm:
      return Backend::kShm;
    case Transport::kGloo:
      return Backend::kGloo;
    case Transport::kMpi:
      return Backend::kMpi;
  }
  throw InternalError("profile links: a transport without a backend");
}

// Operations a pass repeats; the buffers are made once per pass.
struct Buffers {
  at::Tensor full;   // the operation's whole buffer
  at::Tensor shard;  // this rank's slice, for reduce_scatter and all_gather
};

Buffers make_buffers(int64_t count, const Communicator& c) {
  return {at::zeros({count}, at::kFloat),
          at::zeros({shard_range(count, c.size(), c.rank()).numel}, at::kFloat)};
}

// One ping-pong between ranks 0 and 1 (two messages); other ranks idle.
void ping_pong(Communicator& c, const at::Tensor& t) {
  if (c.rank() == 0) {
    c.send(t, 1);
    c.recv(t, 1);
  } else if (c.rank() == 1) {
    c.recv(t, 0);
    c.send(t, 0);
  }
}

void run_once(Communicator& c, LinkOp op, const Buffers& b) {
  switch (op) {
    case LinkOp::kAllReduce:
      return c.all_reduce(b.full);
    case LinkOp::kReduceScatter:
      return c.reduce_scatter(b.shard, b.full);
    case LinkOp::kAllGather:
      return c.all_gather(b.full, b.shard);
    case LinkOp::kBroadcast:
      return c.broadcast(b.full, 0);
    case LinkOp::kSendRecv:
      return ping_pong(c, b.full);
  }
}

// Seconds per operation over one pass of `iters`, the slowest rank's (every
// rank gets the same value). A ping-pong carries two messages: half of it is
// one message's time.
double time_pass(Communicator& c, Communicator& sync, LinkOp op, int64_t count, int iters,
                 int warmup) {
  const Buffers b = make_buffers(count, c);
  for (int i = 0; i < warmup; ++i) run_once(c, op, b);
  sync.barrier();
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i) run_once(c, op, b);
  const double mine =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  at::Tensor t = at::full({1}, mine / iters / (op == LinkOp::kSendRecv ? 2 : 1), at::kDouble);
  sync.all_reduce(t, ReduceOp::kMax);
  return t.item<double>();
}

int iterations_for(const ProfileLinksOptions& o, int64_t bytes) {
  if (o.iters > 0) return o.iters;
  return static_cast<int>(std::clamp<int64_t>((int64_t{16} << 20) / bytes, 3, 200));
}

void check_options(const ProfileLinksOptions& o) {
  TANDEM_CHECK(o.rounds >= 1, "profile links: --rounds must be >= 1 (got {})", o.rounds);
  TANDEM_CHECK(o.iters >= 0, "profile links: --iters must be >= 0 (got {})", o.iters);
  TANDEM_CHECK(o.warmup >= 0, "profile links: --warmup must be >= 0 (got {})", o.warmup);
  TANDEM_CHECK(!o.ops.empty(), "profile links: --ops names no operation");
  sweep_sizes(o.min_bytes, o.max_bytes, o.step_factor);
}

// Hosts that ranks 0 and 1 (send_recv's pair) span. Ranks are listed per
// host in rank order, so rank 1 shares rank 0's host exactly when it is
// second on its own. Collective over `sync`.
int pair_hosts(const Rendezvous& rdzv, Communicator& sync) {
  at::Tensor t = at::full({1}, rdzv.local_rank(), at::kInt);
  sync.broadcast(t, 1);
  return t.item<int>() == 1 ? 1 : 2;
}

struct Subject {
  Transport transport;
  std::shared_ptr<Communicator> comm;
};

// Adds each size's point to `fits` (per subject, then op, as
// profile_links() lays them out). Interleaved: each size's rounds alternate
// the transports, so that a noisy moment hits all alike.
void measure(const ProfileLinksOptions& o, const std::vector<int64_t>& sizes,
             const std::vector<Subject>& subjects, Communicator& sync,
             std::vector<sim::LinkFit>& fits) {
  for (size_t k = 0; k < o.ops.size(); ++k) {
    for (int64_t bytes : sizes) {
      std::vector<std::vector<double>> times(subjects.size());
      for (int round = 0; round < o.rounds; ++round) {
        for (size_t i = 0; i < subjects.size(); ++i) {
          times[i].push_back(time_pass(*subjects[i].comm, sync, o.ops[k], bytes / kElementBytes,
                                       iterations_for(o, bytes), o.warmup));
        }
      }
      for (size_t i = 0; i < subjects.size(); ++i) {
        fits[i * o.ops.size() + k].points.push_back({bytes, bench::median(times[i])});
      }
    }
  }
}

}  // namespace

std::vector<int64_t> sweep_sizes(int64_t min_bytes, int64_t max_bytes, int step_factor) {
  TANDEM_CHECK(min_bytes >= kElementBytes && max_bytes >= min_bytes,
               "profile links: need 4 <= --min-bytes <= --max-bytes (got {} and {})", min_bytes,
               max_bytes);
  TANDEM_CHECK(step_factor >= 2, "profile links: --step-factor must be >= 2 (got {})", step_factor);
  std::vector<int64_t> sizes;
  for (int64_t b = min_bytes; b <= max_bytes; b *= step_factor) {
    sizes.push_back(b / kElementBytes * kElementBytes);
    if (b > max_bytes / step_factor) break;  // the next size would overflow
  }
  TANDEM_CHECK(sizes.size() >= 2,
               "profile links: the sweep {}..{} bytes by x{} has one size; a fit needs two or more "
               "(raise --max-bytes)",
               min_bytes, max_bytes, step_factor);
  return sizes;
}

std::vector<Transport> reachable_transports(const std::vector<Transport>& asked, int hosts,
                                            bool under_mpi) {
  if (asked.empty()) {
    std::vector<Transport> all;
    if (hosts == 1) all.push_back(Transport::kShm);
    all.push_back(Transport::kGloo);
    if (under_mpi) all.push_back(Transport::kMpi);
    return all;
  }
  for (Transport t : asked) {
    TANDEM_CHECK(t != Transport::kShm || hosts == 1,
                 "profile links: --transports shm needs every rank on one host (the job spans {} "
                 "hosts)",
                 hosts);
    TANDEM_CHECK(t != Transport::kMpi || under_mpi,
                 "profile links: --transports mpi needs a launch under mpirun (and an MPI build)");
  }
  return asked;
}

LinksRun profile_links(const ProfileLinksOptions& o) {
  check_options(o);
  const std::vector<int64_t> sizes = sweep_sizes(o.min_bytes, o.max_bytes, o.step_factor);
  const RendezvousInfo info = read_rendezvous_env();
  const int ranks = info.world_size;
  // Checked before joining, so that a lone process serves no store.
  TANDEM_CHECK(ranks >= 2,
               "profile links: needs a job of 2 or more ranks (got {}); run it under "
               "'tandem-run --nproc-per-node 2' or 'mpirun -n 2'",
               ranks);
  Rendezvous rdzv(info, kRendezvousTimeout);
  const bool under_mpi = rdzv.info().source == "mpi" && mpi_available();
  std::vector<Subject> subjects;
  for (Transport t : reachable_transports(o.transports, rdzv.hosts(), under_mpi)) {
    subjects.push_back({t, rdzv.communicator(backend_of(t), kOpTimeout)});
  }
  Communicator& sync = *subjects.front().comm;

  const int send_recv_hosts = pair_hosts(rdzv, sync);
  LinksRun run{.rank = rdzv.info().rank, .ranks = ranks, .hosts = rdzv.hosts()};
  for (const Subject& s : subjects) {
    for (LinkOp op : o.ops) {
      sim::LinkFit fit;
      fit.transport = s.transport;
      fit.op = op;
      // A message is between two ranks, whatever the job's size.
      fit.ranks = op == LinkOp::kSendRecv ? 2 : ranks;
      fit.hosts = op == LinkOp::kSendRecv ? send_recv_hosts : rdzv.hosts();
      fit.label = o.label;
      run.fits.push_back(std::move(fit));
    }
  }
  measure(o, sizes, subjects, sync, run.fits);
  for (sim::LinkFit& fit : run.fits) sim::fit_alpha_beta(fit);
  sync.barrier();
  return run;
}

}  // namespace tandem::lab
