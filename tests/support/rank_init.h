// Communicators for forked test ranks (tests/support/multiproc.h):
// init_rank makes one the way `tandem train` does under tandem-run
// (rendezvous from torchrun's variables over the harness's loopback store
// port); shm_rank makes a shared-memory one directly.
#pragma once

#include <memory>
#include <string>

#include "tandem/comm/backend.h"
#include "tandem/comm/rendezvous.h"

namespace tandem::testing {

// A shared-memory communicator of a forked rank, meeting through a loopback
// TCP store (rank 0 serves it on `port`); `name` keeps tests' segments apart.
inline std::shared_ptr<Communicator> shm_rank(int rank, int size, int port,
                                              const std::string& name,
                                              Millis timeout = Millis(30'000)) {
  auto store = make_tcp_store("127.0.0.1", port, rank == 0, Millis(30'000));
  BackendOptions o{rank, size, with_prefix(store, name), timeout,
                   name + "-test-" + std::to_string(port)};
  return make_shm_communicator(o);
}

inline std::shared_ptr<Communicator> init_rank(int rank, int size, int port,
                                               const std::string& backend = "shm",
                                               Millis timeout = Millis(60'000)) {
  RendezvousInfo info;
  info.rank = rank;
  info.world_size = size;
  info.local_rank = rank;
  info.local_world_size = size;
  info.master_port = port;
  info.source = "torchrun";
  InitOptions io;
  io.backend = parse_backend(backend);
  io.timeout = timeout;
  return tandem::init(info, io);
}

}  // namespace tandem::testing
