// The raw-MPI baseline of `tandem bench comm --backend mpi-raw`: a plain
// blocking MPI_Allreduce (sum, in place) on MPI_COMM_WORLD with no Tandem
// layer around it. It blocks without a deadline, like MPI itself, which is
// why it lives here, beside the benchmark that needs it, and nowhere in
// Tandem's API. Thread-compatible.
#pragma once

#include <ATen/core/Tensor.h>

namespace tandem::bench {

// Sums `tensor` (contiguous, on the CPU, float32/float64/bfloat16/float16/
// int32/int64; 16-bit floats are summed in float) over MPI_COMM_WORLD.
// MPI must already be initialised: the bench holds an MPI communicator while
// it runs. Throws NotSupported in a build without MPI, InvalidArgument for a
// tensor it cannot take, and tandem::Error when MPI fails.
void mpi_raw_all_reduce(const at::Tensor& tensor);

}  // namespace tandem::bench
