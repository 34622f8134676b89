// The links half of `tandem profile`: times each operation on each
// transport the job can reach over a sweep of message sizes and fits
// alpha + beta * bytes to it (sim::LinkFit), for the simulator's cost model.
// Run under tandem-run or mpirun (the job comes from read_rendezvous_env()).
// See docs/lab.md for what each fit means.
//
// Not thread-safe; profile_links() is collective over the whole job.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tandem/sim/profile.h"

namespace tandem::lab {

struct ProfileLinksOptions {
  // The sweep: min_bytes, min_bytes * step_factor, ... up to max_bytes.
  // Each size is the operation's whole buffer (see docs/lab.md), in float32.
  int64_t min_bytes = int64_t{4} << 10;
  int64_t max_bytes = int64_t{16} << 20;
  int step_factor = 4;
  // Timed operations per pass; 0 picks by size (about 16 MiB moved, 3 to
  // 200 operations), which keeps small sizes above the clock's noise.
  int iters = 0;
  // Untimed operations before each pass.
  int warmup = 2;
  // Passes per size, interleaved across transports so that a noisy moment
  // hits all alike; the median pass counts. More rounds: steadier fits.
  int rounds = 3;
  std::vector<sim::LinkOp> ops = {sim::LinkOp::kAllReduce, sim::LinkOp::kReduceScatter,
                                  sim::LinkOp::kAllGather, sim::LinkOp::kBroadcast,
                                  sim::LinkOp::kSendRecv};
  // Empty: every transport the job reaches (reachable_transports()).
  std::vector<sim::Transport> transports = {};
  // Copied into every fit (LinkFit::label), e.g. "loopback".
  std::string label;
};

// What profile_links() measured; the same on every rank.
struct LinksRun {
  int rank = 0;
  int ranks = 1;
  int hosts = 1;
  std::vector<sim::LinkFit> fits = {};  // per transport, then op, in option order
};

// Collective: every rank of the job calls it with the same options. Joins
// the job (rendezvous timeout 120 s), builds one communicator per transport
// and runs the sweep; each operation is bounded by a 300 s timeout
// (TimeoutError naming the ranks missing). Throws InvalidArgument for bad
// options, a job of one rank, or a transport the job cannot reach.
LinksRun profile_links(const ProfileLinksOptions& options);

// The sizes of the sweep. Throws InvalidArgument naming --min-bytes,
// --max-bytes or --step-factor when they are out of range. Pure.
std::vector<int64_t> sweep_sizes(int64_t min_bytes, int64_t max_bytes, int step_factor);

// `asked`, or when it is empty, every transport reachable: shm on one host,
// gloo always, mpi under mpirun in an MPI build. Throws InvalidArgument
// naming --transports for one asked but out of reach. Pure.
std::vector<sim::Transport> reachable_transports(const std::vector<sim::Transport>& asked,
                                                 int hosts, bool under_mpi);

}  // namespace tandem::lab
