// The process-wide MPI state behind every MpiCommunicator: initialisation with
// MPI_THREAD_MULTIPLE, finalisation at process exit, the MPI datatypes and
// reduction ops of Tandem's dtypes, and the requests that timed out and could
// not be cancelled. MPI itself is process-global, so this is the one place
// Tandem keeps such state. Thread-safe.
//
// Only src/comm/mpi/ includes this header (and <mpi.h>).
#pragma once

// The C API is all Tandem uses; skip OpenMPI's deprecated C++ bindings.
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <ATen/core/Tensor.h>
#include <mpi.h>

#include <atomic>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "tandem/comm/communicator.h"
#include "tandem/core/deadline.h"

namespace tandem::detail {

// "MPI_ERR_TRUNCATE: message truncated": the text of an MPI error code.
std::string mpi_error_text(int code);

// Polls `request` with MPI_Test and backoff until it completes (true) or
// `deadline` passes (false). An MPI error ends the wait early (true), with
// `rc` set to it.
bool poll_until(MPI_Request& request, const Deadline& deadline, MPI_Status* status, int& rc);

// Owns one MPI communicator handle and frees it (MPI_Comm_free, which is
// local in OpenMPI and does not wait for pending operations), unless MPI has
// already been finalised.
class MpiCommHandle {
 public:
  MpiCommHandle() = default;
  explicit MpiCommHandle(MPI_Comm comm) : comm_(comm) {}
  ~MpiCommHandle();
  MpiCommHandle(const MpiCommHandle&) = delete;
  MpiCommHandle& operator=(const MpiCommHandle&) = delete;
  MpiCommHandle(MpiCommHandle&& other) noexcept : comm_(other.comm_) {
    other.comm_ = MPI_COMM_NULL;
  }
  MpiCommHandle& operator=(MpiCommHandle&& other) noexcept;

  MPI_Comm get() const { return comm_; }
  // For out-parameters (MPI_Comm_split, MPI_Comm_idup); frees the old handle.
  MPI_Comm* reset();

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
};

// See Note [MPI lifetime] in mpi_runtime.cpp.
class MpiRuntime {
 public:
  // Initialises MPI on the first call (MPI_Init_thread with
  // MPI_THREAD_MULTIPLE unless the program already initialised it). Throws
  // tandem::Error if MPI was finalised or runs below MPI_THREAD_MULTIPLE.
  static MpiRuntime& instance();

  MpiRuntime(const MpiRuntime&) = delete;
  MpiRuntime& operator=(const MpiRuntime&) = delete;

  int world_rank() const { return world_rank_; }
  int world_size() const { return world_size_; }
  // The largest tag MPI accepts (MPI_TAG_UB, at least 32767).
  int tag_ub() const { return tag_ub_; }

  // The MPI datatype of a supported dtype: the predefined types (bool is
  // MPI_C_BOOL, complex64/128 MPI_C_FLOAT/DOUBLE_COMPLEX), and 2-byte
  // contiguous types of our own for float16 and bfloat16.
  MPI_Datatype datatype(at::ScalarType dtype) const;
  // The MPI reduction of `op` on `dtype` (a pair check_reduce_op accepts).
  // kAvg reduces with the sum (the caller divides); bool's max and min are
  // MPI_LOR and MPI_LAND. float16/bfloat16 use user-defined ops computing in
  // float.
  MPI_Op op(at::ScalarType dtype, ReduceOp op) const;

  // Communicators count themselves, so that MPI is never finalised under one.
  void attach() { live_.fetch_add(1); }
  void detach() { live_.fetch_sub(1); }

  // Takes over a request that timed out and cannot be cancelled (collectives,
  // sends), keeping `buffers` alive until it completes, since MPI may still
  // write into or read from them.
  void abandon(MPI_Request request, std::vector<at::Tensor> buffers);

 private:
  MpiRuntime();
  ~MpiRuntime();
  void create_half_types();
  // Completes what it can of abandoned_; returns how many remain pending.
  size_t sweep_abandoned();

  struct Abandoned {
    MPI_Request request;
    std::vector<at::Tensor> buffers;
  };

  bool initialised_here_ = false;
  int world_rank_ = 0;
  int world_size_ = 1;
  int tag_ub_ = 32767;
  MPI_Datatype half_type_ = MPI_DATATYPE_NULL;
  MPI_Datatype bfloat16_type_ = MPI_DATATYPE_NULL;
  // [0]: float16, [1]: bfloat16; by kSum, kMin, kMax, kProduct.
  MPI_Op half_ops_[2][4] = {};
  std::atomic<int> live_{0};
  std::mutex abandoned_mutex_;
  std::vector<Abandoned> abandoned_;  // guarded by abandoned_mutex_
};

}  // namespace tandem::detail
