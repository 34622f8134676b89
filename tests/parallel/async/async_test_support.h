// Helpers shared by the tests of parallel/async: a shm communicator for a
// forked rank.
#pragma once

#include <memory>

#include "tests/support/rank_init.h"

namespace tandem::parallel::testing {

inline std::shared_ptr<Communicator> connect(int rank, int size, int port,
                                             Millis timeout = Millis(30'000)) {
  return tandem::testing::shm_rank(rank, size, port, "async", timeout);
}

}  // namespace tandem::parallel::testing
