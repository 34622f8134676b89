#include "tandem/comm/device_mesh.h"

#include <ATen/ops/full.h>
#include <gtest/gtest.h>

#include "tandem/comm/backend.h"
#include "tandem/core/error.h"
#include "tests/support/multiproc.h"

namespace tandem {
namespace {

TEST(DeviceMesh, CoordinatesAreRowMajor) {
  std::vector<int> shape = {2, 3};
  EXPECT_EQ(DeviceMesh::coordinates_of(0, shape), (std::vector<int>{0, 0}));
  EXPECT_EQ(DeviceMesh::coordinates_of(4, shape), (std::vector<int>{1, 1}));
  EXPECT_EQ(DeviceMesh::coordinates_of(5, shape), (std::vector<int>{1, 2}));
  for (int r = 0; r < 6; ++r)
    EXPECT_EQ(DeviceMesh::rank_of(DeviceMesh::coordinates_of(r, shape), shape), r);
  EXPECT_THROW(DeviceMesh::rank_of({2, 0}, shape), InvalidArgument);
}

TEST(DeviceMesh, TwoByTwoHandsOutEachDimension) {
  testing::expect_ranks_succeed(4, [](int rank, int size, int port) {
    auto store = make_tcp_store("127.0.0.1", port, rank == 0, Millis(30'000));
    BackendOptions o{rank, size, with_prefix(store, "mesh"), Millis(30'000), "mesh"};
    auto world = make_gloo_communicator(o, "127.0.0.1");
    EXPECT_THROW(DeviceMesh(world, {3, 2}, {"data", "model"}), InvalidArgument);
    EXPECT_THROW(DeviceMesh(world, {2, 2}, {"data", "data"}), InvalidArgument);
    DeviceMesh mesh(world, {2, 2}, {"data", "model"});
    EXPECT_EQ(mesh.coordinate("data"), rank / 2);
    EXPECT_EQ(mesh.coordinate("model"), rank % 2);
    EXPECT_THROW(mesh.coordinate("pipe"), InvalidArgument);
    auto data = mesh.get("data");
    auto model = mesh.get("model");
    EXPECT_EQ(data->size(), 2);
    EXPECT_EQ(model->size(), 2);
    EXPECT_EQ(data->rank(), rank / 2);
    EXPECT_EQ(model->rank(), rank % 2);
    // Along "data" the members are {r, r+2}; along "model" {2k, 2k+1}.
    at::Tensor t = at::full({3}, static_cast<double>(rank), at::kLong);
    data->all_reduce(t);
    EXPECT_EQ(t[0].item<int64_t>(), (rank % 2) * 2 + 2);
    at::Tensor u = at::full({3}, static_cast<double>(rank), at::kLong);
    model->all_reduce(u);
    EXPECT_EQ(u[0].item<int64_t>(), (rank / 2) * 4 + 1);
  });
}

}  // namespace
}  // namespace tandem
