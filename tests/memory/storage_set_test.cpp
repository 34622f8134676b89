#include "tandem/memory/storage_set.h"

#include <ATen/ops/ones_like.h>
#include <ATen/ops/zeros.h>
#include <c10/core/StorageImpl.h>
#include <gtest/gtest.h>

namespace tandem::memory {
namespace {

TEST(StorageSet, ViewsCountOnce) {
  at::Tensor flat = at::zeros({100});
  at::Tensor other = at::zeros({10}, at::kDouble);
  EXPECT_EQ(storage_bytes({flat.narrow(0, 0, 50), flat.narrow(0, 50, 50), other, at::Tensor()}),
            400 + 80);
}

TEST(StorageSet, FreedStorageCountsNothing) {
  at::Tensor t = at::zeros({100});
  t.storage().unsafeGetStorageImpl()->reset();
  EXPECT_EQ(storage_bytes({t}), 0);
}

TEST(StorageSet, AddReturnsOnlyTheNewBytesAndRemembersTheStorages) {
  at::Tensor a = at::zeros({10});
  at::Tensor b = at::zeros({20});
  StorageSet set;
  EXPECT_EQ(set.add({a}), 40);
  EXPECT_EQ(set.add({a.narrow(0, 2, 3), b}), 80);
  EXPECT_TRUE(set.contains(a.storage().unsafeGetStorageImpl()));
  EXPECT_TRUE(set.contains(b.storage().unsafeGetStorageImpl()));
  EXPECT_FALSE(set.contains(at::zeros({1}).storage().unsafeGetStorageImpl()));
}

TEST(StorageSet, GradientsOfSkipsParametersWithoutOne) {
  at::Tensor w = at::zeros({1000}).set_requires_grad(true);
  at::Tensor v = at::zeros({10}).set_requires_grad(true);
  w.mutable_grad() = at::ones_like(w);
  EXPECT_EQ(gradients_of({w, v}).size(), 1u);
  EXPECT_EQ(storage_bytes(gradients_of({w, v})), 4000);
}

}  // namespace
}  // namespace tandem::memory
