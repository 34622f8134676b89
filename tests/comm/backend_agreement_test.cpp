// The shared-memory path and Gloo must give identical results: the same bits,
// not merely close values, so that switching backends never changes training.
#include <ATen/ops/complex.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/randint.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/zeros.h>
#include <gtest/gtest.h>

#include "tandem/comm/backend.h"
#include "tests/support/collective_checks.h"
#include "tests/support/multiproc.h"

namespace tandem {
namespace {

struct Pair {
  std::shared_ptr<Communicator> shm;
  std::shared_ptr<Communicator> gloo;
};

Pair connect_both(int rank, int size, int port) {
  auto store = make_tcp_store("127.0.0.1", port, rank == 0, Millis(30'000));
  BackendOptions o{rank, size, with_prefix(store, "agree-shm"), Millis(30'000),
                   "agree-shm-" + std::to_string(port)};
  Pair p;
  p.shm = make_shm_communicator(o);
  o.store = with_prefix(store, "agree-gloo");
  o.group_name = "agree-gloo";
  p.gloo = make_gloo_communicator(o, "127.0.0.1");
  return p;
}

// Whole numbers: every summation order gives the same bits, at any rank
// count (0 or 1 for bool, unsigned for uint8, whole real and imaginary parts
// for complex).
at::Tensor whole_numbers(at::ScalarType dtype, int64_t n, int rank) {
  at::manual_seed(1000 + rank);
  const int64_t low = dtype == at::kBool || dtype == at::kByte ? 0 : -8;
  const int64_t high = dtype == at::kBool ? 2 : 9;
  auto draw = [&] { return at::randint(low, high, {n}, at::TensorOptions().dtype(at::kLong)); };
  if (at::isComplexType(dtype)) {
    return at::complex(draw().to(at::kDouble), draw().to(at::kDouble)).to(dtype);
  }
  return draw().to(dtype);
}

// The reductions defined for the dtype (no sums of bool, no order of complex).
std::vector<ReduceOp> ops_for(at::ScalarType dtype) {
  if (dtype == at::kBool) return {ReduceOp::kMin, ReduceOp::kMax};
  if (at::isComplexType(dtype)) return {ReduceOp::kSum, ReduceOp::kAvg};
  return {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMin, ReduceOp::kMax};
}

void expect_same(Communicator& a, Communicator& b, const at::Tensor& input,
                 const std::string& what) {
  const auto ops = ops_for(input.scalar_type());
  for (ReduceOp op : ops) {
    at::Tensor x = input.clone();
    at::Tensor y = input.clone();
    a.all_reduce(x, op);
    b.all_reduce(y, op);
    EXPECT_TRUE(at::equal(x, y)) << what << " all_reduce(" << to_string(op) << ") differs";
  }
  auto mine = shard_range(input.numel(), a.size(), a.rank());
  at::Tensor rs_a = at::zeros({mine.numel}, input.options());
  at::Tensor rs_b = at::zeros({mine.numel}, input.options());
  a.reduce_scatter(rs_a, input, ops.front());
  b.reduce_scatter(rs_b, input, ops.front());
  EXPECT_TRUE(at::equal(rs_a, rs_b)) << what << " reduce_scatter differs";
  at::Tensor ag_a = at::zeros({input.numel()}, input.options());
  at::Tensor ag_b = at::zeros({input.numel()}, input.options());
  a.all_gather(ag_a, rs_a);
  b.all_gather(ag_b, rs_b);
  EXPECT_TRUE(at::equal(ag_a, ag_b)) << what << " all_gather differs";
}

class BackendAgreement : public ::testing::TestWithParam<int> {};

TEST_P(BackendAgreement, ShmAndGlooGiveIdenticalBits) {
  testing::expect_ranks_succeed(GetParam(), [](int rank, int size, int port) {
    auto p = connect_both(rank, size, port);
    for (auto dtype : testing::kCheckDtypes) {
      for (int64_t n : {int64_t{1}, int64_t{7}, int64_t{300'001}}) {
        expect_same(*p.shm, *p.gloo, whole_numbers(dtype, n, rank),
                    std::string(c10::toString(dtype)) + " x" + std::to_string(n));
      }
    }
    if (size == 2) {
      // Two ranks: a + b == b + a exactly, so arbitrary floats agree too.
      at::manual_seed(rank);
      expect_same(*p.shm, *p.gloo, at::randn({(1 << 20) + 3}, at::kFloat), "random float32");
    }
  });
}

INSTANTIATE_TEST_SUITE_P(WorldSizes, BackendAgreement, ::testing::Values(2, 3, 4));

}  // namespace
}  // namespace tandem
