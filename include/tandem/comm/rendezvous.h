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
// TANDEM_STORE_SERVED=1 (tandem-run sets it): the launcher serves the store.
// TANDEM_COMM_TIMEOUT and TANDEM_RDZV_TIMEOUT (seconds) set init()'s timeouts
// where InitOptions leaves them unset; see resolve_timeouts().
// Not thread-safe: call init() once per process, before other threads use it.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>

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
  // TANDEM_STORE_SERVED=1: the launcher (tandem-run) serves the store, so
  // rank 0 only connects to it, and the rendezvous keys of each restart go
  // under "r<restart_count>/" of the one store.
  bool store_served = false;
};

// Reads the variables above. Throws InvalidArgument naming the variable when
// one is malformed or inconsistent (e.g. RANK >= WORLD_SIZE). With none set,
// returns a single-process world.
RendezvousInfo read_rendezvous_env(const env::Lookup& lookup = env::process_lookup());

// Which communicator init() builds. kAuto: shared memory when every rank is
// on one host, hierarchical shm+gloo across hosts (flat gloo when the ranks
// are not numbered host by host, or one per host).
enum class Backend { kAuto, kShm, kGloo, kMpi };

// "auto", "shm", "gloo" or "mpi" to its Backend. Throws InvalidArgument
// naming the valid names, and NotSupported for "nccl" (no NCCL backend
// exists yet). Pure.
Backend parse_backend(std::string_view name);
std::string_view to_string(Backend backend);

// The rendezvous timeout when neither InitOptions nor TANDEM_RDZV_TIMEOUT
// sets one (the collective default is kDefaultTimeout, 300 s).
inline constexpr Millis kDefaultRendezvousTimeout{120'000};

struct InitOptions {
  Backend backend = Backend::kAuto;
  // Default timeout of every call on the communicator (and of its setup).
  // Unset: TANDEM_COMM_TIMEOUT, else kDefaultTimeout (300 s). Raise it when
  // ranks are legitimately slow to meet (a long evaluation on one rank); a
  // lower value reports a hung peer sooner.
  std::optional<Millis> timeout = std::nullopt;
  // Bound on joining: connecting to the store and waiting for every rank.
  // Unset: TANDEM_RDZV_TIMEOUT, else kDefaultRendezvousTimeout (120 s).
  // Raise it when ranks start far apart (a slow scheduler, a big image).
  std::optional<Millis> rendezvous_timeout = std::nullopt;
};

// The timeouts init() uses.
struct InitTimeouts {
  Millis timeout = kDefaultTimeout;
  Millis rendezvous_timeout = kDefaultRendezvousTimeout;
};

// Resolves each timeout: the InitOptions field if set, else its variable
// (TANDEM_COMM_TIMEOUT, TANDEM_RDZV_TIMEOUT; seconds, decimals allowed, e.g.
// "90" or "2.5"), else the default. Throws InvalidArgument naming the field
// or the variable when a value is zero, negative or malformed. Reads
// `lookup` only; no communication.
InitTimeouts resolve_timeouts(const InitOptions& options,
                              const env::Lookup& lookup = env::process_lookup());

// A joined job: the store (rank 0, or tandem-run, serves it at
// MASTER_ADDR:MASTER_PORT), the
// token checked, and which ranks share a host. One per process; it can build
// several communicators (e.g. to compare backends in one run).
class Rendezvous {
 public:
  // Collective over the whole world, bounded by `timeout` (the rendezvous
  // timeout). Throws TimeoutError naming the ranks that did not arrive, or
  // the address when the store cannot be reached; InvalidArgument when this
  // process's token is refused.
  Rendezvous(const RendezvousInfo& info, Millis timeout);
  // The same over an existing store, already prefixed for this group (an
  // elastic generation's); info.rank and info.world_size are the group's.
  Rendezvous(const RendezvousInfo& info, std::shared_ptr<Store> store, Millis timeout);
  ~Rendezvous();
  Rendezvous(const Rendezvous&) = delete;
  Rendezvous& operator=(const Rendezvous&) = delete;

  // Collective. A new communicator over the whole world on `backend` (see
  // Backend) whose calls default to `timeout`; each call gets its own group.
  // Blocks until every rank has set it up or `timeout` passes (TimeoutError
  // naming the ranks missing). Throws InvalidArgument for kShm across hosts.
  std::shared_ptr<Communicator> communicator(Backend backend, Millis timeout);

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
// options.backend, with the timeouts of resolve_timeouts(options).
// Collective over the whole world: blocks until every rank has joined or the
// rendezvous timeout passes (TimeoutError naming the missing ranks, or the
// store's address while it cannot be reached; while it waits for the store
// it logs to stderr every few seconds).
std::shared_ptr<Communicator> init(const RendezvousInfo& info, const InitOptions& options = {});

// init(read_rendezvous_env(), options).
std::shared_ptr<Communicator> init(const InitOptions& options = {});

}  // namespace tandem
