#include "tests/support/collective_checks.h"

#include <ATen/ops/arange.h>
#include <ATen/ops/complex.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/isclose.h>
#include <ATen/ops/ones_like.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/zeros.h>
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <utility>

namespace tandem::testing {
namespace {

bool is_integral(at::ScalarType t) { return at::isIntegralType(t, /*includeBool=*/false); }

// The ops defined for a dtype (Communicator's header comment): no sum, avg
// or product of bools, no min or max of complex numbers.
std::vector<ReduceOp> ops_for(at::ScalarType t) {
  if (t == at::kBool) return {ReduceOp::kMin, ReduceOp::kMax};
  if (at::isComplexType(t)) return {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kProduct};
  return {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMin, ReduceOp::kMax, ReduceOp::kProduct};
}

// What the checks compare in: complex128 for complex dtypes, float64 else.
at::ScalarType value_type(at::ScalarType t) {
  return at::isComplexType(t) ? at::kComplexDouble : at::kDouble;
}

// The inputs of `rank` (elements 0..n-1, given as i3 = 3 * i), in
// value_type(t), exact in every dtype: small whole numbers,
// (rank * 5 + i * 3) % 11 + 1, exact after a sum over 4 ranks even in
// bfloat16 and int8 (0 or 1 for bool; a real and an imaginary part for
// complex). Product inputs stay in {1, 2} ({1, 1+i} for complex) so that
// products over 4 ranks are exact everywhere. Vectorised, so that checking
// 2^20 elements costs little next to the collective.
at::Tensor input_values(at::ScalarType t, int rank, const at::Tensor& i3, bool for_product) {
  auto checks = [&](int r) { return i3.add(r * 5).remainder_(11).add_(1); };
  const bool complex = at::isComplexType(t);
  if (for_product) {
    // (rank + i) % 3 == 0  <=>  (3 * rank + i3) % 9 == 0
    const at::Tensor two = i3.add(3 * rank).remainder_(9).eq(0).to(at::kDouble);
    return complex ? at::complex(at::ones_like(two), two) : two.add_(1);
  }
  if (t == at::kBool) return checks(rank).remainder_(2).to(at::kDouble);
  if (!complex) return checks(rank).to(at::kDouble);
  return at::complex(checks(rank).to(at::kDouble), checks(rank + 1).sub_(6).to(at::kDouble));
}

// The inputs and single-process reductions of one dtype and length, each
// computed once and shared by the checks of that dtype and length.
class Reference {
 public:
  Reference(at::ScalarType dtype, int size, int64_t n)
      : dtype_(dtype), size_(size), n_(n), i3_(at::arange(n, at::kLong).mul_(3)) {}

  at::ScalarType dtype() const { return dtype_; }
  int64_t n() const { return n_; }
  // The input of `rank` (any index, all_to_all uses size^2), in value_type.
  const at::Tensor& values(int rank, bool for_product = false) {
    at::Tensor& slot = values_[{rank, for_product}];
    if (!slot.defined()) slot = input_values(dtype_, rank, i3_, for_product);
    return slot;
  }
  // The same, as a new tensor of the dtype, to hand to a collective (which
  // may write into it).
  at::Tensor input(int rank, bool for_product = false) {
    return values(rank, for_product).to(dtype_, /*non_blocking=*/false, /*copy=*/true);
  }
  // The reduction of every rank's input under `op`, in value_type.
  const at::Tensor& reduced(ReduceOp op) {
    at::Tensor& slot = reduced_[op];
    if (slot.defined()) return slot;
    std::vector<at::Tensor> all;
    for (int r = 0; r < size_; ++r) all.push_back(values(r, op == ReduceOp::kProduct));
    const at::Tensor stacked = at::stack(all);
    switch (op) {
      case ReduceOp::kSum:
        slot = stacked.sum(0);
        break;
      case ReduceOp::kAvg:
        slot = stacked.sum(0).div_(size_);
        if (is_integral(dtype_)) slot.trunc_();
        break;
      case ReduceOp::kProduct:
        slot = stacked.prod(0);
        break;
      case ReduceOp::kMin:
        slot = stacked.amin(0);
        break;
      case ReduceOp::kMax:
        slot = stacked.amax(0);
        break;
    }
    return slot;
  }

 private:
  const at::ScalarType dtype_;
  const int size_;
  const int64_t n_;
  const at::Tensor i3_;  // 3 * (0, 1, ..., n - 1)
  std::map<std::pair<int, bool>, at::Tensor> values_;
  std::map<ReduceOp, at::Tensor> reduced_;
};

double tolerance(at::ScalarType t) {
  if (t == at::kHalf || t == at::kBFloat16) return 1e-2;
  if (t == at::kFloat || t == at::kComplexFloat) return 1e-6;
  return 1e-12;
}

// Compares `got` with `want` (value_type, same length) within
// tolerance(dtype) x max(1, |want|), and records the first mismatch only.
void expect_values(const at::Tensor& got, const at::Tensor& want, const std::string& what) {
  const at::Tensor g = got.reshape({-1}).to(want.scalar_type());
  if (at::equal(g, want)) return;  // whole numbers mostly come out exact
  // isclose allows atol + rtol x |want|; half the tolerance each keeps that
  // within tol x max(1, |want|).
  const double half_tol = tolerance(got.scalar_type()) / 2;
  const at::Tensor bad = at::isclose(g, want, half_tol, half_tol).logical_not_().nonzero();
  if (bad.numel() == 0) return;
  const int64_t i = bad[0][0].item<int64_t>();
  ADD_FAILURE() << what << ": element " << i << " is " << g[i].item() << ", expected "
                << want[i].item();
}


std::string label(std::string_view op, const Reference& ref, int rank) {
  return fmt::format("rank {}: {} {} x{}", rank, op, c10::toString(ref.dtype()), ref.n());
}

void check_all_reduce(Communicator& comm, Reference& ref) {
  for (ReduceOp op : ops_for(ref.dtype())) {
    at::Tensor t = ref.input(comm.rank(), op == ReduceOp::kProduct);
    comm.all_reduce(t, op);
    expect_values(t, ref.reduced(op),
                  label(fmt::format("all_reduce({})", to_string(op)), ref, comm.rank()));
  }
}

void check_broadcast(Communicator& comm, Reference& ref) {
  for (int root = 0; root < comm.size(); ++root) {
    at::Tensor t = comm.rank() == root ? ref.input(root) : at::zeros({ref.n()}, ref.dtype());
    comm.broadcast(t, root);
    expect_values(t, ref.values(root),
                  label(fmt::format("broadcast(root {})", root), ref, comm.rank()));
  }
}

// all_gather of a length-n vector whose element i belongs to the rank
// owning i; each rank contributes its shard of its own input.
void check_all_gather(Communicator& comm, Reference& ref) {
  const int rank = comm.rank();
  const int size = comm.size();
  const int64_t n = ref.n();
  auto mine = shard_range(n, size, rank);
  at::Tensor shard = ref.input(rank).narrow(0, mine.offset, mine.numel).clone();
  at::Tensor out = at::zeros({n}, ref.dtype());
  comm.all_gather(out, shard);
  at::Tensor want = at::empty({n}, value_type(ref.dtype()));
  for (int r = 0; r < size; ++r) {
    auto s = shard_range(n, size, r);
    want.narrow(0, s.offset, s.numel).copy_(ref.values(r).narrow(0, s.offset, s.numel));
  }
  expect_values(out, want, label("all_gather", ref, rank));
  // In place: the input is this rank's own slice of the output (ZeRO).
  at::Tensor in_place = at::zeros({n}, ref.dtype());
  at::Tensor own = in_place.narrow(0, mine.offset, mine.numel);
  own.copy_(shard);
  comm.all_gather(in_place, own);
  EXPECT_TRUE(at::equal(in_place, out)) << label("all_gather in place", ref, rank);
}

void check_reduce_scatter(Communicator& comm, Reference& ref) {
  const auto ops = ops_for(ref.dtype());
  for (ReduceOp op : {ops.front(), ReduceOp::kMax, ReduceOp::kProduct}) {  // sum, or min for bool
    if (std::find(ops.begin(), ops.end(), op) == ops.end()) continue;
    auto mine = shard_range(ref.n(), comm.size(), comm.rank());
    at::Tensor in = ref.input(comm.rank(), op == ReduceOp::kProduct);
    at::Tensor out = at::zeros({mine.numel}, ref.dtype());
    comm.reduce_scatter(out, in, op);
    expect_values(out, ref.reduced(op).narrow(0, mine.offset, mine.numel),
                  label(fmt::format("reduce_scatter({})", to_string(op)), ref, comm.rank()));
  }
}

// Chunk j of every rank's input goes to rank j and carries (rank, j) in its
// values.
void check_all_to_all(Communicator& comm, Reference& ref) {
  const int rank = comm.rank();
  const int size = comm.size();
  const int64_t n = ref.n();
  at::Tensor in = at::empty({n * size}, ref.dtype());
  at::Tensor want = at::empty({n * size}, value_type(ref.dtype()));
  for (int j = 0; j < size; ++j) {
    in.narrow(0, j * n, n).copy_(ref.values(rank * size + j));
    want.narrow(0, j * n, n).copy_(ref.values(j * size + rank));
  }
  at::Tensor out = at::zeros({n * size}, ref.dtype());
  comm.all_to_all(out, in);
  expect_values(out, want, label("all_to_all", ref, rank));
}

// A ring: send to the right, receive from the left.
void check_send_recv(Communicator& comm, Reference& ref) {
  const int rank = comm.rank();
  const int size = comm.size();
  const int right = (rank + 1) % size;
  const int left = (rank + size - 1) % size;
  at::Tensor out = ref.input(rank);
  at::Tensor in = at::zeros({ref.n()}, ref.dtype());
  auto send = comm.send_async(out, right, 7);
  comm.recv(in, left, 7);
  send->wait(comm.timeout());
  expect_values(in, ref.values(left), label("send/recv", ref, rank));
}

}  // namespace

void check_collectives(Communicator& comm, const std::vector<int64_t>& lengths,
                       bool with_all_to_all) {
  for (at::ScalarType dtype : kCheckDtypes) {
    for (int64_t n : lengths) {
      Reference ref(dtype, comm.size(), n);
      check_all_reduce(comm, ref);
      check_broadcast(comm, ref);
      check_all_gather(comm, ref);
      check_reduce_scatter(comm, ref);
      if (with_all_to_all) check_all_to_all(comm, ref);
      if (comm.size() > 1) check_send_recv(comm, ref);
    }
  }
  comm.barrier();
}

}  // namespace tandem::testing
