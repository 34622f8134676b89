// Cutting tensors into MPI-sized pieces: MPI counts are ints, so a call
// moves at most INT_MAX elements (less where a test lowers the limit; see
// make_pieced_mpi_communicator). See Note [MPI counts] in
// mpi_collectives.cpp. Pure; thread-compatible.
#pragma once

#include <ATen/core/Tensor.h>

#include <algorithm>
#include <cstdint>

namespace tandem::detail {

// Calls fn(offset, count) for the consecutive pieces of [0, numel) of at
// most `max_count` elements, in order; for numel 0, fn(0, 0) once if
// `at_least_one` (a message of no elements is still a message), else never.
template <typename Fn>
void for_each_piece(int64_t numel, int64_t max_count, bool at_least_one, Fn&& fn) {
  if (numel == 0 && at_least_one) fn(int64_t{0}, 0);
  for (int64_t offset = 0; offset < numel; offset += max_count) {
    fn(offset, static_cast<int>(std::min(max_count, numel - offset)));
  }
}

// The address of element `offset` of the contiguous tensor `t`.
inline void* element_at(const at::Tensor& t, int64_t offset) {
  return static_cast<char*>(t.data_ptr()) + offset * static_cast<int64_t>(t.element_size());
}

}  // namespace tandem::detail
