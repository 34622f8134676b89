#include "bench/mpi_raw.h"

#include <fmt/format.h>

#include <climits>

#include "tandem/core/check.h"
#include "tandem/core/error.h"

#ifdef TANDEM_WITH_MPI
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <mpi.h>
#endif

namespace tandem::bench {

#ifdef TANDEM_WITH_MPI
namespace {

// MPI has no 16-bit floats: they travel as 2 bytes and are summed in float.
template <typename T>
void sum_in_float(void* in, void* inout, int* len, MPI_Datatype*) {
  const T* a = static_cast<const T*>(in);
  T* b = static_cast<T*>(inout);
  for (int i = 0; i < *len; ++i) b[i] = static_cast<T>(float(a[i]) + float(b[i]));
}

struct Sum {
  MPI_Datatype type;
  MPI_Op op;
};

// The 2-byte type and float sum of one 16-bit float type, made on first use
// and freed at exit (before MPI_Finalize, which Tandem's MPI runtime calls
// later: it was created first).
template <typename T>
class HalfSum {
 public:
  HalfSum() {
    MPI_Type_contiguous(2, MPI_BYTE, &sum_.type);
    MPI_Type_commit(&sum_.type);
    MPI_Op_create(&sum_in_float<T>, /*commute=*/1, &sum_.op);
  }
  ~HalfSum() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;
    MPI_Op_free(&sum_.op);
    MPI_Type_free(&sum_.type);
  }
  HalfSum(const HalfSum&) = delete;
  HalfSum& operator=(const HalfSum&) = delete;
  Sum get() const { return sum_; }

 private:
  Sum sum_{MPI_DATATYPE_NULL, MPI_OP_NULL};
};

template <typename T>
Sum half_sum() {
  static const HalfSum<T> sum;
  return sum.get();
}

Sum sum_of(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat:
      return {MPI_FLOAT, MPI_SUM};
    case at::kDouble:
      return {MPI_DOUBLE, MPI_SUM};
    case at::kInt:
      return {MPI_INT32_T, MPI_SUM};
    case at::kLong:
      return {MPI_INT64_T, MPI_SUM};
    case at::kHalf:
      return half_sum<c10::Half>();
    case at::kBFloat16:
      return half_sum<c10::BFloat16>();
    default:
      break;
  }
  throw InvalidArgument(
      fmt::format("mpi_raw_all_reduce: dtype {} is not one of float32, float64, "
                  "bfloat16, float16, int32, int64",
                  c10::toString(dtype)));
}

}  // namespace

void mpi_raw_all_reduce(const at::Tensor& tensor) {
  TANDEM_CHECK(tensor.device().is_cpu() && tensor.is_contiguous(),
               "mpi_raw_all_reduce: the tensor must be contiguous and on the CPU");
  TANDEM_CHECK(tensor.numel() <= INT_MAX, "mpi_raw_all_reduce: {} elements exceed MPI's int count",
               tensor.numel());
  int initialized = 0;
  MPI_Initialized(&initialized);
  TANDEM_CHECK(initialized,
               "mpi_raw_all_reduce: MPI is not initialised; create an MPI "
               "communicator first");
  const Sum sum = sum_of(tensor.scalar_type());
  int rc = MPI_Allreduce(MPI_IN_PLACE, tensor.data_ptr(), static_cast<int>(tensor.numel()),
                         sum.type, sum.op, MPI_COMM_WORLD);
  if (rc != MPI_SUCCESS) {
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, text, &len);
    int rank = -1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    throw Error(fmt::format("rank {}: MPI_Allreduce failed: {}", rank, std::string(text, len)));
  }
}

#else

void mpi_raw_all_reduce(const at::Tensor&) {
  throw NotSupported(
      "the MPI baseline needs the MPI backend; reconfigure with -DTANDEM_WITH_MPI=ON");
}

#endif

}  // namespace tandem::bench
