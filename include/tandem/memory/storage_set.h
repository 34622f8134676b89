// The distinct storages behind a set of tensors, for the memory accounting:
// views of one buffer count once, a freed storage (size 0) counts nothing,
// and the set tells the activation tracker which storages are model state.
// It measures tensors by identity (their StorageImpl), not by asking the
// allocator.
//
// Not thread-safe; local (no collective).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <unordered_set>
#include <vector>

namespace c10 {
struct StorageImpl;
}

namespace tandem::memory {

class StorageSet {
 public:
  // Adds the storages of the defined tensors; returns the bytes of those not
  // in the set before (a freed storage, size 0, adds nothing).
  int64_t add(const std::vector<at::Tensor>& tensors);
  // True if `storage` was added.
  bool contains(const c10::StorageImpl* storage) const { return seen_.count(storage) > 0; }

 private:
  std::unordered_set<const c10::StorageImpl*> seen_;
};

// Bytes of the distinct storages behind the defined tensors: views of one
// buffer count once, and a freed storage (size 0) counts nothing.
int64_t storage_bytes(const std::vector<at::Tensor>& tensors);

// The .grad tensors of `params` (undefined ones skipped), for storage_bytes.
std::vector<at::Tensor> gradients_of(const std::vector<at::Tensor>& params);

}  // namespace tandem::memory
