// ATen's RecordFunction (the profiler's per-operator hook), for the
// observers that watch operators' tensors: the activation tracker here and
// FSDP's storage-touch observer (src/parallel/fsdp/). Include this first in
// a .cpp, before anything that could include ATen/record_function.h itself.
#pragma once

// Debian's LibTorch is built with NDEBUG, and RecordFunction has one more
// member without it: inputs() and outputs() would read the wrong offset in a
// debug build of Tandem. Defining NDEBUG around the include gives the
// library's layout.
#ifndef NDEBUG
#define NDEBUG
#define TANDEM_RESTORE_NDEBUG
#endif
#include <ATen/record_function.h>
#ifdef TANDEM_RESTORE_NDEBUG
#undef NDEBUG
#undef TANDEM_RESTORE_NDEBUG
#endif

namespace tandem::memory::detail {

// Calls fn(tensor) for each defined tensor with storage in an operator's
// argument or result: a tensor, a tensor list, or a list of optional tensors.
template <class Fn>
void for_each_stored_tensor(const c10::IValue& v, Fn&& fn) {
  if (v.isTensor()) {
    const at::Tensor& t = v.toTensor();
    if (t.defined() && t.has_storage()) fn(t);
  } else if (v.isTensorList()) {
    for (const at::Tensor& t : v.toTensorVector()) {
      if (t.defined() && t.has_storage()) fn(t);
    }
  } else if (v.isList()) {
    for (const c10::IValue& e : v.toListRef()) for_each_stored_tensor(e, fn);
  }
}

}  // namespace tandem::memory::detail
