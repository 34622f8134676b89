#include "tandem/memory/storage_set.h"

#include <c10/core/StorageImpl.h>

namespace tandem::memory {

int64_t StorageSet::add(const std::vector<at::Tensor>& tensors) {
  int64_t bytes = 0;
  for (const auto& t : tensors) {
    if (!t.defined() || !t.has_storage()) continue;
    const c10::StorageImpl* impl = t.storage().unsafeGetStorageImpl();
    if (seen_.insert(impl).second) bytes += static_cast<int64_t>(impl->nbytes());
  }
  return bytes;
}

int64_t storage_bytes(const std::vector<at::Tensor>& tensors) { return StorageSet().add(tensors); }

std::vector<at::Tensor> gradients_of(const std::vector<at::Tensor>& params) {
  std::vector<at::Tensor> grads;
  for (const auto& p : params) {
    if (p.grad().defined()) grads.push_back(p.grad());
  }
  return grads;
}

}  // namespace tandem::memory
