// Helpers shared by the tests of parallel/async: a shm communicator for a
// forked rank.
#pragma once

#include <memory>
#include <string>

#include "tandem/comm/backend.h"

namespace tandem::parallel::testing {

inline std::shared_ptr<Communicator> connect(int rank, int size, int port,
                                             Millis timeout = Millis(30'000)) {
  auto store = make_tcp_store("127.0.0.1", port, rank == 0, Millis(30'000));
  BackendOptions o{rank, size, with_prefix(store, "async"), timeout,
                   "async-test-" + std::to_string(port)};
  return make_shm_communicator(o);
}

}  // namespace tandem::parallel::testing
