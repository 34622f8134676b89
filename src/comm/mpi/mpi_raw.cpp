// The raw-MPI baseline of the communication benchmark (see backend.h).
#include "comm/mpi/mpi_runtime.h"
#include "tandem/comm/backend.h"
#include "tandem/core/check.h"

namespace tandem {

void mpi_raw_all_reduce(const at::Tensor& tensor) {
  check_comm_tensor(tensor, "mpi_raw_all_reduce tensor");
  auto& mpi = detail::MpiRuntime::instance();
  TANDEM_CHECK(tensor.numel() <= INT32_MAX,
               "mpi_raw_all_reduce: {} elements exceed MPI's int count", tensor.numel());
  int rc = MPI_Allreduce(MPI_IN_PLACE, tensor.data_ptr(), static_cast<int>(tensor.numel()),
                         mpi.datatype(tensor.scalar_type()),
                         mpi.op(tensor.scalar_type(), ReduceOp::kSum), MPI_COMM_WORLD);
  if (rc != MPI_SUCCESS) {
    throw Error(fmt::format("rank {}: MPI_Allreduce failed: {}", mpi.world_rank(),
                            detail::mpi_error_text(rc)));
  }
}

}  // namespace tandem
