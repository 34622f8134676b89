// init_rank: the communicator of one forked test rank, made the way
// `tandem train` makes it under tandem-run (rendezvous from torchrun's
// variables over the harness's loopback store port).
#pragma once

#include <memory>
#include <string>

#include "tandem/comm/rendezvous.h"

namespace tandem::testing {

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
  io.backend = backend;
  io.timeout = timeout;
  return tandem::init(info, io);
}

}  // namespace tandem::testing
