// Rendezvous: how a process learns its rank, the world size and where the
// store is, and how init() turns that into a Communicator.
//
// Environment, in order of precedence:
//   torchrun / tandem-run: RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
//     MASTER_ADDR, MASTER_PORT (also GROUP_RANK / TANDEM_NODE_RANK)
//   OpenMPI (mpirun): OMPI_COMM_WORLD_RANK, _SIZE, _LOCAL_RANK, _LOCAL_SIZE
//   Slurm (srun): SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID,
//     SLURM_NTASKS_PER_NODE, SLURM_NODEID
// MASTER_ADDR / MASTER_PORT default to 127.0.0.1 / 29500 under mpirun and srun.
// TANDEM_RDZV_TOKEN, when set, must match on every process: one with a wrong
// or missing token is refused with InvalidArgument and the job carries on.
// Not thread-safe: call init() once per process, before other threads use it.
#pragma once

#include <memory>
#include <string>

#include "tandem/comm/communicator.h"
#include "tandem/comm/store.h"
#include "tandem/core/env.h"

namespace tandem {

struct RendezvousInfo {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  int local_world_size = 1;
  int node_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  std::string source = "single";  // "torchrun", "mpi", "slurm", "single"
  int restart_count = 0;          // TANDEM_RESTART_COUNT
  std::string token;              // TANDEM_RDZV_TOKEN, empty if unset
};

// Reads the variables above. Throws InvalidArgument naming the variable when
// one is malformed or inconsistent (e.g. RANK >= WORLD_SIZE). With none set,
// returns a single-process world.
RendezvousInfo read_rendezvous_env(const env::Lookup& lookup = env::process_lookup());

struct InitOptions {
  // "auto" (shared memory on one host, hierarchical shm+gloo across hosts),
  // "shm", "gloo", "mpi", "nccl".
  std::string backend = "auto";
  // Default timeout for every call on the communicator.
  Millis timeout = kDefaultTimeout;
  // Bound on joining: connecting to the store and waiting for every rank.
  Millis rendezvous_timeout = Millis(120'000);
};

// A joined job: the store (rank 0 serves it at MASTER_ADDR:MASTER_PORT), the
// token checked, and which ranks share a host. One per process; it can build
// several communicators (e.g. to compare backends in one run).
class Rendezvous {
 public:
  // Collective over the whole world. Throws TimeoutError naming the ranks
  // that did not arrive, or the address when the store cannot be reached;
  // InvalidArgument when this process's token is refused.
  Rendezvous(const RendezvousInfo& info, Millis timeout);
  ~Rendezvous();
  Rendezvous(const Rendezvous&) = delete;
  Rendezvous& operator=(const Rendezvous&) = delete;

  // Collective. A new communicator over the whole world on `backend` (see
  // InitOptions::backend); each call gets its own group.
  std::shared_ptr<Communicator> communicator(const std::string& backend, Millis timeout);

  const RendezvousInfo& info() const { return info_; }
  const std::shared_ptr<Store>& store() const { return store_; }
  // Number of distinct hosts, and this rank's local rank among its host's.
  int hosts() const;
  int local_rank() const;
  int local_world_size() const;

  struct Layout;  // which ranks share a host; defined in rendezvous.cpp

 private:
  RendezvousInfo info_;
  std::shared_ptr<Store> store_;
  std::string job_;
  std::unique_ptr<Layout> layout_;
  int groups_ = 0;
};

// Joins the job described by `info` and builds one communicator on
// options.backend. Collective over the whole world.
std::shared_ptr<Communicator> init(const RendezvousInfo& info, const InitOptions& options = {});

// init(read_rendezvous_env(), options).
std::shared_ptr<Communicator> init(const InitOptions& options = {});

}  // namespace tandem
