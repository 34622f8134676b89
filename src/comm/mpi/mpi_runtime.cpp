#include "comm/mpi/mpi_runtime.h"

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <fmt/format.h>

#include <algorithm>

#include "tandem/core/error.h"
#include "tandem/core/log.h"

namespace tandem::detail {

// Note [MPI lifetime]
// MPI can be initialised once per process and never again after
// MPI_Finalize, so the runtime is a function-local static: the first
// make_mpi_communicator initialises MPI (unless the program did), and the
// static's destructor, at process exit, finalises it if we initialised it.
// It skips MPI_Finalize, with a warning, while a communicator is still alive
// (one held by another static object) or while an abandoned request is still
// pending: MPI_Finalize may wait for the peers of such a request forever, and
// no destructor may wait without bound. mpirun then reports that this rank
// exited without finalising, which is the truth.

std::string mpi_error_text(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(code, text, &len) != MPI_SUCCESS) return fmt::format("MPI error {}", code);
  return std::string(text, static_cast<size_t>(len));
}

bool poll_until(MPI_Request& request, const Deadline& deadline, MPI_Status* status, int& rc) {
  Backoff backoff;
  int done = 0;
  while (true) {
    rc = MPI_Test(&request, &done, status);
    if (rc != MPI_SUCCESS || done) return true;
    if (deadline.expired()) return false;
    backoff.pause();
  }
}

MpiCommHandle::~MpiCommHandle() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (comm_ != MPI_COMM_NULL && !finalized) MPI_Comm_free(&comm_);
}

MpiCommHandle& MpiCommHandle::operator=(MpiCommHandle&& other) noexcept {
  if (this != &other) {
    MpiCommHandle old(comm_);
    comm_ = other.comm_;
    other.comm_ = MPI_COMM_NULL;
  }
  return *this;
}

MPI_Comm* MpiCommHandle::reset() {
  MpiCommHandle old(comm_);
  comm_ = MPI_COMM_NULL;
  return &comm_;
}

namespace {

// Reductions of 2-byte floats, computed in float per element (like LibTorch's
// CPU kernels), as MPI user functions.
struct Sum {
  float operator()(float a, float b) const { return a + b; }
};
struct Min {
  float operator()(float a, float b) const { return std::min(a, b); }
};
struct Max {
  float operator()(float a, float b) const { return std::max(a, b); }
};
struct Product {
  float operator()(float a, float b) const { return a * b; }
};

template <typename T, typename Combine>
void reduce_in_float(void* in, void* inout, int* len, MPI_Datatype*) {
  const T* a = static_cast<const T*>(in);
  T* b = static_cast<T*>(inout);
  Combine combine;
  for (int i = 0; i < *len; ++i) {
    b[i] = static_cast<T>(combine(static_cast<float>(a[i]), static_cast<float>(b[i])));
  }
}

template <typename T>
void create_ops(MPI_Op (&ops)[4]) {
  MPI_Op_create(&reduce_in_float<T, Sum>, /*commute=*/1, &ops[0]);
  MPI_Op_create(&reduce_in_float<T, Min>, 1, &ops[1]);
  MPI_Op_create(&reduce_in_float<T, Max>, 1, &ops[2]);
  MPI_Op_create(&reduce_in_float<T, Product>, 1, &ops[3]);
}

int op_index(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAvg:
      return 0;
    case ReduceOp::kMin:
      return 1;
    case ReduceOp::kMax:
      return 2;
    case ReduceOp::kProduct:
      return 3;
  }
  return 0;
}

}  // namespace

MpiRuntime& MpiRuntime::instance() {
  static MpiRuntime runtime;
  return runtime;
}

MpiRuntime::MpiRuntime() {
  int initialized = 0;
  int finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (finalized) {
    throw Error(
        "MPI backend: MPI has already been finalised in this process and cannot be "
        "initialised again; create MPI communicators before calling MPI_Finalize");
  }
  int provided = MPI_THREAD_SINGLE;
  if (!initialized) {
    int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided);
    if (rc != MPI_SUCCESS) {
      throw Error(
          fmt::format("MPI backend: MPI_Init_thread failed: {}; run under mpirun/srun "
                      "and check the MPI installation",
                      mpi_error_text(rc)));
    }
    initialised_here_ = true;
    // Errors inside non-blocking collectives are raised on MPI_COMM_WORLD;
    // return them as codes (which become tandem errors) instead of aborting.
    // A program that initialised MPI itself keeps its own handler.
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  } else {
    MPI_Query_thread(&provided);
  }
  if (provided < MPI_THREAD_MULTIPLE) {
    // Leave MPI initialised: finalising here would make any later MPI use
    // in this process impossible, and the process is misconfigured anyway.
    throw Error(fmt::format(
        "MPI backend: MPI provides thread level {} but Tandem needs MPI_THREAD_MULTIPLE ({}): "
        "point-to-point operations run on their own threads beside collectives. {}",
        provided, static_cast<int>(MPI_THREAD_MULTIPLE),
        initialised_here_ ? "Use an MPI library built with thread support (OpenMPI: "
                            "ompi_info | grep 'MPI_THREAD_MULTIPLE: yes')"
                          : "The program initialised MPI itself; call MPI_Init_thread with "
                            "MPI_THREAD_MULTIPLE instead of MPI_Init"));
  }
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &world_size_);
  void* value = nullptr;
  int flag = 0;
  MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, &value, &flag);
  if (flag) tag_ub_ = *static_cast<int*>(value);
  create_half_types();
}

void MpiRuntime::create_half_types() {
  MPI_Type_contiguous(2, MPI_BYTE, &half_type_);
  MPI_Type_commit(&half_type_);
  MPI_Type_contiguous(2, MPI_BYTE, &bfloat16_type_);
  MPI_Type_commit(&bfloat16_type_);
  create_ops<c10::Half>(half_ops_[0]);
  create_ops<c10::BFloat16>(half_ops_[1]);
}

MpiRuntime::~MpiRuntime() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  for (auto& ops : half_ops_) {
    for (MPI_Op& op : ops) MPI_Op_free(&op);
  }
  MPI_Type_free(&half_type_);
  MPI_Type_free(&bfloat16_type_);
  if (!initialised_here_) return;
  int live = live_.load();
  size_t pending = sweep_abandoned();
  if (live > 0 || pending > 0) {
    log::warn(
        "rank {}: not calling MPI_Finalize at exit: {} MPI communicator(s) still alive and {} "
        "timed-out MPI operation(s) still pending; MPI_Finalize could wait for them forever",
        world_rank_, live, pending);
    // The buffers of pending requests stay allocated: MPI may still touch them.
    (void)new std::vector<Abandoned>(std::move(
        abandoned_));  // NOLINT(cppcoreguidelines-owning-memory): leaked on purpose, see above
    return;
  }
  MPI_Finalize();
}

MPI_Datatype MpiRuntime::datatype(at::ScalarType dtype) const {
  switch (dtype) {
    case at::kFloat:
      return MPI_FLOAT;
    case at::kDouble:
      return MPI_DOUBLE;
    case at::kInt:
      return MPI_INT32_T;
    case at::kLong:
      return MPI_INT64_T;
    case at::kHalf:
      return half_type_;
    case at::kBFloat16:
      return bfloat16_type_;
    case at::kBool:
      return MPI_C_BOOL;
    case at::kByte:
      return MPI_UINT8_T;
    case at::kChar:
      return MPI_INT8_T;
    case at::kShort:
      return MPI_INT16_T;
    case at::kComplexFloat:
      return MPI_C_FLOAT_COMPLEX;
    case at::kComplexDouble:
      return MPI_C_DOUBLE_COMPLEX;
    default:
      throw InternalError(
          fmt::format("MPI backend: no MPI datatype for dtype {}", c10::toString(dtype)));
  }
}

MPI_Op MpiRuntime::op(at::ScalarType dtype, ReduceOp op) const {
  if (dtype == at::kHalf) return half_ops_[0][op_index(op)];
  if (dtype == at::kBFloat16) return half_ops_[1][op_index(op)];
  if (dtype == at::kBool) return op == ReduceOp::kMin ? MPI_LAND : MPI_LOR;
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAvg:
      return MPI_SUM;
    case ReduceOp::kMin:
      return MPI_MIN;
    case ReduceOp::kMax:
      return MPI_MAX;
    case ReduceOp::kProduct:
      return MPI_PROD;
  }
  return MPI_SUM;
}

void MpiRuntime::abandon(MPI_Request request, std::vector<at::Tensor> buffers) {
  sweep_abandoned();
  std::lock_guard<std::mutex> lock(abandoned_mutex_);
  abandoned_.push_back(Abandoned{request, std::move(buffers)});
}

size_t MpiRuntime::sweep_abandoned() {
  std::lock_guard<std::mutex> lock(abandoned_mutex_);
  std::erase_if(abandoned_, [](Abandoned& a) {
    int done = 0;
    int rc = MPI_Test(&a.request, &done, MPI_STATUS_IGNORE);
    return rc == MPI_SUCCESS && done;
  });
  return abandoned_.size();
}

}  // namespace tandem::detail
