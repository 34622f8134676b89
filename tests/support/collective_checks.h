// Backend-independent checks of a Communicator: every collective x every
// supported dtype x the given lengths, against values each rank computes
// locally. Used by the tests of every backend, so all are held to one
// standard. Call from every rank of `comm` (it is collective).
#pragma once

#include <cstdint>
#include <vector>

#include "tandem/comm/communicator.h"

namespace tandem::testing {

// The lengths of Done-when: empty, one element, odd, and 2^20 + 3.
inline const std::vector<int64_t> kCheckLengths = {0, 1, 7, (int64_t{1} << 20) + 3};

// all_reduce (every ReduceOp), broadcast (every root), all_gather,
// reduce_scatter (sum and max), send/recv around a ring, barrier; all_to_all
// when `with_all_to_all`. Records gtest failures naming op, dtype and length.
void check_collectives(Communicator& comm, const std::vector<int64_t>& lengths = kCheckLengths,
                       bool with_all_to_all = true);

// The deterministic input of `rank` for element `i`: small whole numbers,
// exact in every dtype (including bfloat16) after a sum over 4 ranks.
double check_value(int rank, int64_t i);

}  // namespace tandem::testing
