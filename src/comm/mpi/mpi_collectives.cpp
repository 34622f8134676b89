// The collectives of MpiCommunicator (see mpi_communicator.h).
//
// Note [MPI counts]
// MPI counts and displacements are ints, so one call moves at most INT_MAX
// elements, and MPI_Iallgatherv / MPI_Ireduce_scatter address at most
// INT_MAX elements in all. Operations within that (nearly all) make the one
// call they always made. Longer ones go in pieces of at most max_count_
// elements, one after the other, each a whole collective:
//   all_reduce, broadcast  - consecutive pieces of the tensor;
//   all_gather             - every rank's shard broadcast from its owner,
//                            in pieces;
//   reduce_scatter         - every shard reduced to its owner (MPI_Ireduce),
//                            in pieces;
//   all_to_all             - piece k of every block at once, through a
//                            datatype whose extent is one block (MPI_Aint,
//                            so no int offsets);
//   send / recv            - a header with the length, then pieces (see
//                            do_send).
// Every rank cuts the same lengths the same way, so the pieces match.
// max_count_ is INT_MAX except in tests, which lower it to run these paths
// on small tensors and compare them with whole calls.
#include <ATen/ops/empty.h>
#include <fmt/format.h>

#include <vector>

#include "comm/algorithms/reduce_ops.h"
#include "comm/mpi/mpi_communicator.h"
#include "comm/mpi/mpi_pieces.h"

namespace tandem::detail {

void MpiCommunicator::do_all_reduce(const at::Tensor& tensor, ReduceOp op, const OpContext& ctx) {
  enter(ctx);
  const at::ScalarType dtype = tensor.scalar_type();
  MPI_Datatype type = runtime_.datatype(dtype);
  MPI_Op mpi_op = runtime_.op(dtype, op);
  for_each_piece(tensor.numel(), max_count_, false, [&](int64_t offset, int count) {
    MPI_Request request;
    check_mpi(MPI_Iallreduce(MPI_IN_PLACE, element_at(tensor, offset), count, type, mpi_op,
                             collective_comm_.get(), &request),
              "MPI_Iallreduce", ctx);
    wait_collective(request, ctx, tensor);
  });
  if (op == ReduceOp::kAvg) finish_average(tensor, size());
}

void MpiCommunicator::do_broadcast(const at::Tensor& tensor, int root, const OpContext& ctx) {
  enter(ctx);
  MPI_Datatype type = runtime_.datatype(tensor.scalar_type());
  for_each_piece(tensor.numel(), max_count_, false, [&](int64_t offset, int count) {
    MPI_Request request;
    check_mpi(
        MPI_Ibcast(element_at(tensor, offset), count, type, root, collective_comm_.get(), &request),
        "MPI_Ibcast", ctx);
    wait_collective(request, ctx, tensor);
  });
}

void MpiCommunicator::do_all_gather(const at::Tensor& output, const at::Tensor& input,
                                    const OpContext& ctx) {
  enter(ctx);
  const int64_t n = output.numel();
  if (n == 0) return;
  MPI_Datatype type = runtime_.datatype(output.scalar_type());
  const ShardRange mine = shard_range(n, size(), rank());
  // MPI forbids overlapping send and receive buffers; an input that is this
  // rank's own slice of the output (ZeRO's flat buffers) goes in place.
  const bool in_place = input.data_ptr() == element_at(output, mine.offset);
  if (n > max_count_) {
    if (!in_place)
      output.reshape({-1}).narrow(0, mine.offset, mine.numel).copy_(input.reshape({-1}));
    for (int r = 0; r < size(); ++r) {
      const ShardRange s = shard_range(n, size(), r);
      for_each_piece(s.numel, max_count_, false, [&](int64_t offset, int count) {
        MPI_Request request;
        check_mpi(MPI_Ibcast(element_at(output, s.offset + offset), count, type, r,
                             collective_comm_.get(), &request),
                  "MPI_Ibcast", ctx);
        wait_collective(request, ctx, output, input);
      });
    }
    return;
  }
  std::vector<int> counts(static_cast<size_t>(size()));
  std::vector<int> displs(static_cast<size_t>(size()));
  for (int r = 0; r < size(); ++r) {
    const ShardRange s = shard_range(n, size(), r);
    counts[static_cast<size_t>(r)] = static_cast<int>(s.numel);
    displs[static_cast<size_t>(r)] = static_cast<int>(s.offset);
  }
  MPI_Request request;
  check_mpi(MPI_Iallgatherv(in_place ? MPI_IN_PLACE : input.data_ptr(),
                            static_cast<int>(mine.numel), type, output.data_ptr(), counts.data(),
                            displs.data(), type, collective_comm_.get(), &request),
            "MPI_Iallgatherv", ctx);
  wait_collective(request, ctx, output, input);
}

void MpiCommunicator::do_reduce_scatter(const at::Tensor& output, const at::Tensor& input,
                                        ReduceOp op, const OpContext& ctx) {
  enter(ctx);
  const int64_t n = input.numel();
  if (n == 0) return;
  const at::ScalarType dtype = input.scalar_type();
  MPI_Datatype type = runtime_.datatype(dtype);
  MPI_Op mpi_op = runtime_.op(dtype, op);
  if (n > max_count_) {
    for (int r = 0; r < size(); ++r) {
      const ShardRange s = shard_range(n, size(), r);
      for_each_piece(s.numel, max_count_, false, [&](int64_t offset, int count) {
        MPI_Request request;
        void* recv = r == rank() ? element_at(output, offset) : nullptr;
        check_mpi(MPI_Ireduce(element_at(input, s.offset + offset), recv, count, type, mpi_op, r,
                              collective_comm_.get(), &request),
                  "MPI_Ireduce", ctx);
        wait_collective(request, ctx, output, input);
      });
    }
  } else {
    std::vector<int> counts(static_cast<size_t>(size()));
    for (int r = 0; r < size(); ++r) {
      counts[static_cast<size_t>(r)] = static_cast<int>(shard_range(n, size(), r).numel);
    }
    MPI_Request request;
    check_mpi(MPI_Ireduce_scatter(input.data_ptr(), output.data_ptr(), counts.data(), type, mpi_op,
                                  collective_comm_.get(), &request),
              "MPI_Ireduce_scatter", ctx);
    wait_collective(request, ctx, output, input);
  }
  if (op == ReduceOp::kAvg) finish_average(output, size());
}

void MpiCommunicator::do_all_to_all(const at::Tensor& output, const at::Tensor& input,
                                    const OpContext& ctx) {
  enter(ctx);
  const int64_t block = input.numel() / size();
  MPI_Datatype type = runtime_.datatype(input.scalar_type());
  if (block <= max_count_) {
    if (block == 0) return;
    MPI_Request request;
    check_mpi(MPI_Ialltoall(input.data_ptr(), static_cast<int>(block), type, output.data_ptr(),
                            static_cast<int>(block), type, collective_comm_.get(), &request),
              "MPI_Ialltoall", ctx);
    wait_collective(request, ctx, output, input);
    return;
  }
  MPI_Aint lower = 0;
  MPI_Aint extent = 0;
  MPI_Type_get_extent(type, &lower, &extent);
  for_each_piece(block, max_count_, false, [&](int64_t offset, int count) {
    // `count` elements, then a stride of one block: the piece of every block.
    MPI_Datatype piece = MPI_DATATYPE_NULL;
    MPI_Datatype strided = MPI_DATATYPE_NULL;
    MPI_Type_contiguous(count, type, &piece);
    MPI_Type_create_resized(piece, 0, static_cast<MPI_Aint>(block) * extent, &strided);
    MPI_Type_commit(&strided);
    MPI_Type_free(&piece);
    MPI_Request request;
    const int rc = MPI_Ialltoall(element_at(input, offset), 1, strided, element_at(output, offset),
                                 1, strided, collective_comm_.get(), &request);
    MPI_Type_free(&strided);  // MPI keeps it while the request needs it
    check_mpi(rc, "MPI_Ialltoall", ctx);
    wait_collective(request, ctx, output, input);
  });
}

void MpiCommunicator::do_barrier(const OpContext& ctx) {
  enter(ctx);
  MPI_Request request;
  check_mpi(MPI_Ibarrier(collective_comm_.get(), &request), "MPI_Ibarrier", ctx);
  wait_collective(request, ctx, at::Tensor());
}

}  // namespace tandem::detail
