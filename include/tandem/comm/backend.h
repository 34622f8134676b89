// Factories for the communicator backends. Most code calls init() (see
// rendezvous.h), which picks one; tests and benchmarks call these directly.
// Each factory is collective over the `size` ranks it connects and blocks
// until all have joined or `timeout` passes (TimeoutError naming the ranks
// that did not arrive). A backend left out of the build throws NotSupported
// naming the CMake option that enables it.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "tandem/comm/communicator.h"
#include "tandem/comm/store.h"

namespace tandem {

struct BackendOptions {
  int rank = 0;
  int size = 1;
  // Store for this group's setup, already prefixed with the group's name.
  std::shared_ptr<Store> store;
  // Default timeout of every call, and of the setup itself.
  Millis timeout = kDefaultTimeout;
  // Unique per job and group, same on every member; names shared-memory
  // segments and MPI/Gloo contexts.
  std::string group_name = "world";
};

// Shared memory among ranks of one host (POSIX shm, pipelined chunked
// reduce-scatter + all-gather). All ranks must be on the same host.
std::shared_ptr<Communicator> make_shm_communicator(const BackendOptions& options);

// Gloo through LibTorch's c10d ProcessGroupGloo over TCP; works across hosts.
// `interface_host` picks the address to bind (empty: the host name's address,
// falling back to loopback).
std::shared_ptr<Communicator> make_gloo_communicator(const BackendOptions& options,
                                                     const std::string& interface_host = "");

// OpenMPI over MPI_COMM_WORLD (initialised with MPI_THREAD_MULTIPLE). Requires
// options.rank/size to equal the MPI world rank/size; for sub-groups use split.
std::shared_ptr<Communicator> make_mpi_communicator(const BackendOptions& options);

// Composes a communicator among the ranks of one host (`local`, shared
// memory) with one among the ranks of equal local rank across hosts
// (`cross`): all_reduce is local reduce-scatter, cross-host all_reduce of each
// slice, local all-gather. `global` (a flat world communicator, e.g. Gloo)
// carries send/recv, barrier, all_to_all and sub-groups. Ranks must be
// numbered host by host with equal ranks per host; `rank`/`size` are the
// world's. See Note [Hierarchical layout] in hierarchical_communicator.cpp.
std::shared_ptr<Communicator> make_hierarchical_communicator(int rank, int size,
                                                             std::shared_ptr<Communicator> local,
                                                             std::shared_ptr<Communicator> cross,
                                                             std::shared_ptr<Communicator> global,
                                                             Millis timeout);

// True if this build includes the MPI backend (CMake TANDEM_WITH_MPI).
bool mpi_available();

}  // namespace tandem
