#include "tests/support/collective_checks.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/real.h>
#include <ATen/ops/zeros.h>
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <complex>

namespace tandem::testing {
namespace {

using Value = std::complex<double>;

bool is_integral(at::ScalarType t) { return at::isIntegralType(t, /*includeBool=*/false); }

// The ops defined for a dtype (Communicator's header comment): no sum, avg
// or product of bools, no min or max of complex numbers.
std::vector<ReduceOp> ops_for(at::ScalarType t) {
  if (t == at::kBool) return {ReduceOp::kMin, ReduceOp::kMax};
  if (at::isComplexType(t)) return {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kProduct};
  return {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMin, ReduceOp::kMax, ReduceOp::kProduct};
}

// The input of `rank` for element i, exact in every dtype: whole numbers
// from check_value (0 or 1 for bool; a real and an imaginary part for
// complex). Product inputs stay in {1, 2} ({1, 1+i} for complex) so that
// products over 4 ranks are exact everywhere.
Value input_value(at::ScalarType t, int rank, int64_t i, bool for_product) {
  if (for_product) {
    const bool two = (rank + i) % 3 == 0;
    if (at::isComplexType(t)) return two ? Value(1, 1) : Value(1, 0);
    return two ? 2.0 : 1.0;
  }
  if (t == at::kBool) return static_cast<double>(static_cast<int64_t>(check_value(rank, i)) % 2);
  if (at::isComplexType(t)) return Value(check_value(rank, i), check_value(rank + 1, i) - 6);
  return check_value(rank, i);
}

at::Tensor make_input(at::ScalarType dtype, int64_t n, int rank, bool for_product) {
  at::Tensor d = at::empty({n}, at::kComplexDouble);
  auto* p = static_cast<c10::complex<double>*>(d.data_ptr());
  for (int64_t i = 0; i < n; ++i) {
    const Value v = input_value(dtype, rank, i, for_product);
    p[i] = c10::complex<double>(v.real(), v.imag());
  }
  return at::isComplexType(dtype) ? d.to(dtype) : at::real(d).to(dtype);
}

// The single-process reduction of every rank's input for element i.
Value expected_reduce(at::ScalarType t, ReduceOp op, int size, int64_t i) {
  const bool product = op == ReduceOp::kProduct;
  Value acc = input_value(t, 0, i, product);
  for (int r = 1; r < size; ++r) {
    const Value v = input_value(t, r, i, product);
    switch (op) {
      case ReduceOp::kSum:
      case ReduceOp::kAvg:
        acc += v;
        break;
      case ReduceOp::kProduct:
        acc *= v;
        break;
      case ReduceOp::kMin:
        acc = std::min(acc.real(), v.real());
        break;
      case ReduceOp::kMax:
        acc = std::max(acc.real(), v.real());
        break;
    }
  }
  if (op == ReduceOp::kAvg) {
    acc /= static_cast<double>(size);
    if (is_integral(t)) acc = std::trunc(acc.real());
  }
  return acc;
}

double tolerance(at::ScalarType t) {
  if (t == at::kHalf || t == at::kBFloat16) return 1e-2;
  if (t == at::kFloat || t == at::kComplexFloat) return 1e-6;
  return 1e-12;
}

// Compares `got` with `want(i)` and records the first mismatch only.
template <typename Want>
void expect_values(const at::Tensor& got, Want&& want, const std::string& what) {
  at::Tensor d = got.to(at::kComplexDouble);
  const auto* p = static_cast<const c10::complex<double>*>(d.data_ptr());
  const double tol = tolerance(got.scalar_type());
  for (int64_t i = 0; i < d.numel(); ++i) {
    const Value w = want(i);
    const double err = std::fabs(p[i].real() - w.real()) + std::fabs(p[i].imag() - w.imag());
    if (err > tol * std::max(1.0, std::fabs(w.real()) + std::fabs(w.imag()))) {
      ADD_FAILURE() << what << ": element " << i << " is " << Value(p[i].real(), p[i].imag())
                    << ", expected " << w;
      return;
    }
  }
}

std::string label(std::string_view op, at::ScalarType t, int64_t n, int rank) {
  return fmt::format("rank {}: {} {} x{}", rank, op, c10::toString(t), n);
}

void check_all_reduce(Communicator& comm, at::ScalarType dtype, int64_t n) {
  for (ReduceOp op : ops_for(dtype)) {
    at::Tensor t = make_input(dtype, n, comm.rank(), op == ReduceOp::kProduct);
    comm.all_reduce(t, op);
    expect_values(
        t, [&](int64_t i) { return expected_reduce(dtype, op, comm.size(), i); },
        label(fmt::format("all_reduce({})", to_string(op)), dtype, n, comm.rank()));
  }
}

void check_broadcast(Communicator& comm, at::ScalarType dtype, int64_t n) {
  for (int root = 0; root < comm.size(); ++root) {
    at::Tensor t = comm.rank() == root ? make_input(dtype, n, root, false) : at::zeros({n}, dtype);
    comm.broadcast(t, root);
    expect_values(
        t, [&](int64_t i) { return input_value(dtype, root, i, false); },
        label(fmt::format("broadcast(root {})", root), dtype, n, comm.rank()));
  }
}

// all_gather of a length-n vector whose element i belongs to the rank
// owning i; each rank contributes its shard of its own input.
void check_all_gather(Communicator& comm, at::ScalarType dtype, int64_t n) {
  const int rank = comm.rank();
  const int size = comm.size();
  auto mine = shard_range(n, size, rank);
  at::Tensor shard = make_input(dtype, n, rank, false).narrow(0, mine.offset, mine.numel).clone();
  at::Tensor out = at::zeros({n}, dtype);
  comm.all_gather(out, shard);
  expect_values(
      out,
      [&](int64_t i) {
        for (int r = 0; r < size; ++r) {
          auto s = shard_range(n, size, r);
          if (i >= s.offset && i < s.offset + s.numel) return input_value(dtype, r, i, false);
        }
        return Value(-1);
      },
      label("all_gather", dtype, n, rank));
  // In place: the input is this rank's own slice of the output (ZeRO).
  at::Tensor in_place = at::zeros({n}, dtype);
  at::Tensor own = in_place.narrow(0, mine.offset, mine.numel);
  own.copy_(shard);
  comm.all_gather(in_place, own);
  EXPECT_TRUE(at::equal(in_place, out)) << label("all_gather in place", dtype, n, rank);
}

void check_reduce_scatter(Communicator& comm, at::ScalarType dtype, int64_t n) {
  const ReduceOp first = ops_for(dtype).front();  // sum, or min for bool
  for (ReduceOp op : {first, ReduceOp::kMax, ReduceOp::kProduct}) {
    const auto ops = ops_for(dtype);
    if (std::find(ops.begin(), ops.end(), op) == ops.end()) continue;
    auto mine = shard_range(n, comm.size(), comm.rank());
    at::Tensor in = make_input(dtype, n, comm.rank(), op == ReduceOp::kProduct);
    at::Tensor out = at::zeros({mine.numel}, dtype);
    comm.reduce_scatter(out, in, op);
    expect_values(
        out, [&](int64_t i) { return expected_reduce(dtype, op, comm.size(), mine.offset + i); },
        label(fmt::format("reduce_scatter({})", to_string(op)), dtype, n, comm.rank()));
  }
}

void check_all_to_all(Communicator& comm, at::ScalarType dtype, int64_t n) {
  const int rank = comm.rank();
  const int size = comm.size();
  const int64_t m = n * size;  // chunks of n
  at::Tensor in = at::empty({m}, dtype);
  for (int j = 0; j < size; ++j) {
    // chunk j goes to rank j and carries (rank, j) in its values
    in.narrow(0, j * n, n).copy_(make_input(dtype, n, rank * size + j, false));
  }
  at::Tensor out = at::zeros({m}, dtype);
  comm.all_to_all(out, in);
  expect_values(
      out,
      [&](int64_t k) {
        int64_t src = k / std::max<int64_t>(n, 1);
        return input_value(dtype, static_cast<int>(src) * size + rank, k % std::max<int64_t>(n, 1),
                           false);
      },
      label("all_to_all", dtype, n, rank));
}

// A ring: send to the right, receive from the left.
void check_send_recv(Communicator& comm, at::ScalarType dtype, int64_t n) {
  const int rank = comm.rank();
  const int size = comm.size();
  const int right = (rank + 1) % size;
  const int left = (rank + size - 1) % size;
  at::Tensor out = make_input(dtype, n, rank, false);
  at::Tensor in = at::zeros({n}, dtype);
  auto send = comm.send_async(out, right, 7);
  comm.recv(in, left, 7);
  send->wait(comm.timeout());
  expect_values(
      in, [&](int64_t i) { return input_value(dtype, left, i, false); },
      label("send/recv", dtype, n, rank));
}

}  // namespace

double check_value(int rank, int64_t i) { return static_cast<double>((rank * 5 + i * 3) % 11 + 1); }

void check_collectives(Communicator& comm, const std::vector<int64_t>& lengths,
                       bool with_all_to_all) {
  for (at::ScalarType dtype : kCheckDtypes) {
    for (int64_t n : lengths) {
      check_all_reduce(comm, dtype, n);
      check_broadcast(comm, dtype, n);
      check_all_gather(comm, dtype, n);
      check_reduce_scatter(comm, dtype, n);
      if (with_all_to_all) check_all_to_all(comm, dtype, n);
      if (comm.size() > 1) check_send_recv(comm, dtype, n);
    }
  }
  comm.barrier();
}

}  // namespace tandem::testing
