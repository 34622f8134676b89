// Backend-independent checks of a Communicator: every collective x every
// dtype LibTorch has on CPU x every ReduceOp defined for it x the given
// lengths, against the single-process result each rank computes locally
// from every rank's input. Used by the tests of every backend, so all are
// held to one standard. Call from every rank of `comm` (it is collective).
#pragma once

#include <cstdint>
#include <vector>

#include "tandem/comm/communicator.h"

namespace tandem::testing {

// The lengths of Done-when: empty, one element, odd, and 2^20 + 3.
inline const std::vector<int64_t> kCheckLengths = {0, 1, 7, (int64_t{1} << 20) + 3};

// The dtypes every backend moves (communicator.h).
inline const std::vector<at::ScalarType> kCheckDtypes = {
    at::kBool, at::kByte,     at::kChar,  at::kShort,  at::kInt,          at::kLong,
    at::kHalf, at::kBFloat16, at::kFloat, at::kDouble, at::kComplexFloat, at::kComplexDouble};

// all_reduce (every ReduceOp defined for the dtype), broadcast (every root),
// all_gather (also in place), reduce_scatter (sum or min, max and product
// where defined), send/recv around a ring, barrier; all_to_all when
// `with_all_to_all`. Records gtest failures naming op, dtype and length.
void check_collectives(Communicator& comm, const std::vector<int64_t>& lengths = kCheckLengths,
                       bool with_all_to_all = true);

}  // namespace tandem::testing
