#include "tests/support/collective_checks.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/full.h>
#include <ATen/ops/zeros.h>
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

namespace tandem::testing {
namespace {

const std::vector<at::ScalarType> kDtypes = {at::kFloat, at::kDouble, at::kBFloat16,
                                             at::kHalf,  at::kInt,    at::kLong};

bool is_integral(at::ScalarType t) { return t == at::kInt || t == at::kLong; }

// Product inputs stay in {1, 2} so products over 4 ranks are exact everywhere.
double product_value(int rank, int64_t i) { return ((rank + i) % 3 == 0) ? 2.0 : 1.0; }

at::Tensor make_input(at::ScalarType dtype, int64_t n, int rank, bool for_product) {
  at::Tensor d = at::empty({n}, at::kDouble);
  double* p = d.data_ptr<double>();
  for (int64_t i = 0; i < n; ++i)
    p[i] = for_product ? product_value(rank, i) : check_value(rank, i);
  return d.to(dtype);
}

double expected_reduce(ReduceOp op, int size, int64_t i, bool integral) {
  double acc = 0;
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAvg:
      for (int r = 0; r < size; ++r) acc += check_value(r, i);
      if (op == ReduceOp::kAvg) acc = integral ? std::trunc(acc / size) : acc / size;
      return acc;
    case ReduceOp::kMin:
      acc = check_value(0, i);
      for (int r = 1; r < size; ++r) acc = std::min(acc, check_value(r, i));
      return acc;
    case ReduceOp::kMax:
      acc = check_value(0, i);
      for (int r = 1; r < size; ++r) acc = std::max(acc, check_value(r, i));
      return acc;
    case ReduceOp::kProduct:
      acc = 1;
      for (int r = 0; r < size; ++r) acc *= product_value(r, i);
      return acc;
  }
  return 0;
}

double tolerance(at::ScalarType t) {
  if (t == at::kHalf || t == at::kBFloat16) return 1e-2;
  if (t == at::kFloat) return 1e-6;
  return 1e-12;
}

// Compares `got` with `want(i)` and records the first mismatch only.
template <typename Want>
void expect_values(const at::Tensor& got, Want&& want, const std::string& what) {
  at::Tensor d = got.to(at::kDouble);
  const double* p = d.data_ptr<double>();
  double tol = tolerance(got.scalar_type());
  for (int64_t i = 0; i < d.numel(); ++i) {
    double w = want(i);
    if (std::fabs(p[i] - w) > tol * std::max(1.0, std::fabs(w))) {
      ADD_FAILURE() << what << ": element " << i << " is " << p[i] << ", expected " << w;
      return;
    }
  }
}

std::string label(std::string_view op, at::ScalarType t, int64_t n, int rank) {
  return fmt::format("rank {}: {} {} x{}", rank, op, c10::toString(t), n);
}

}  // namespace

double check_value(int rank, int64_t i) { return static_cast<double>((rank * 5 + i * 3) % 11 + 1); }

void check_collectives(Communicator& comm, const std::vector<int64_t>& lengths,
                       bool with_all_to_all) {
  const int rank = comm.rank();
  const int size = comm.size();
  for (at::ScalarType dtype : kDtypes) {
    const bool integral = is_integral(dtype);
    for (int64_t n : lengths) {
      for (ReduceOp op :
           {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMin, ReduceOp::kMax, ReduceOp::kProduct}) {
        at::Tensor t = make_input(dtype, n, rank, op == ReduceOp::kProduct);
        comm.all_reduce(t, op);
        expect_values(
            t, [&](int64_t i) { return expected_reduce(op, size, i, integral); },
            label(fmt::format("all_reduce({})", to_string(op)), dtype, n, rank));
      }
      for (int root = 0; root < size; ++root) {
        at::Tensor t = rank == root ? make_input(dtype, n, root, false) : at::zeros({n}, dtype);
        comm.broadcast(t, root);
        expect_values(
            t, [&](int64_t i) { return check_value(root, i); },
            label(fmt::format("broadcast(root {})", root), dtype, n, rank));
      }
      {
        // all_gather of a length-n vector whose element i belongs to the rank
        // owning i; each rank contributes its shard's check_value(owner, i).
        auto mine = shard_range(n, size, rank);
        at::Tensor full_in = make_input(dtype, n, rank, false);
        at::Tensor shard = full_in.narrow(0, mine.offset, mine.numel).clone();
        at::Tensor out = at::zeros({n}, dtype);
        comm.all_gather(out, shard);
        expect_values(
            out,
            [&](int64_t i) {
              for (int r = 0; r < size; ++r) {
                auto s = shard_range(n, size, r);
                if (i >= s.offset && i < s.offset + s.numel) return check_value(r, i);
              }
              return -1.0;
            },
            label("all_gather", dtype, n, rank));
        // In place: the input is this rank's own slice of the output (ZeRO).
        at::Tensor in_place = at::zeros({n}, dtype);
        at::Tensor own = in_place.narrow(0, mine.offset, mine.numel);
        own.copy_(shard);
        comm.all_gather(in_place, own);
        EXPECT_TRUE(at::equal(in_place, out)) << label("all_gather in place", dtype, n, rank);
      }
      for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kMax}) {
        auto mine = shard_range(n, size, rank);
        at::Tensor in = make_input(dtype, n, rank, false);
        at::Tensor out = at::zeros({mine.numel}, dtype);
        comm.reduce_scatter(out, in, op);
        expect_values(
            out, [&](int64_t i) { return expected_reduce(op, size, mine.offset + i, integral); },
            label(fmt::format("reduce_scatter({})", to_string(op)), dtype, n, rank));
      }
      if (with_all_to_all) {
        int64_t m = n * size;  // chunks of n
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
              return check_value(static_cast<int>(src) * size + rank, k % std::max<int64_t>(n, 1));
            },
            label("all_to_all", dtype, n, rank));
      }
      if (size > 1) {
        // A ring: send to the right, receive from the left.
        int right = (rank + 1) % size;
        int left = (rank + size - 1) % size;
        at::Tensor out = make_input(dtype, n, rank, false);
        at::Tensor in = at::zeros({n}, dtype);
        auto send = comm.send_async(out, right, 7);
        comm.recv(in, left, 7);
        send->wait(comm.timeout());
        expect_values(
            in, [&](int64_t i) { return check_value(left, i); },
            label("send/recv", dtype, n, rank));
      }
    }
  }
  comm.barrier();
}

}  // namespace tandem::testing
