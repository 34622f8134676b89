// The baseline for shm_allreduce_bench: OpenMPI's MPI_Allreduce (float32
// sum) over the same sizes, timed the same way. Run it with
//   mpirun --allow-run-as-root --oversubscribe -np 2 build/bench/mpi_allreduce_bench
// Prints one JSON line per size from rank 0.
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace {

// Median over repetitions of the mean time of `iters` back-to-back calls;
// every repetition starts after a barrier.
double time_allreduce_us(std::vector<float>& buf, int iters, int reps) {
  std::vector<double> samples;
  for (int rep = 0; rep < reps; ++rep) {
    MPI_Barrier(MPI_COMM_WORLD);
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < iters; ++i) {
      MPI_Allreduce(MPI_IN_PLACE, buf.data(), static_cast<int>(buf.size()), MPI_FLOAT, MPI_SUM,
                    MPI_COMM_WORLD);
    }
    auto t1 = std::chrono::steady_clock::now();
    double us = std::chrono::duration<double, std::micro>(t1 - t0).count() / iters;
    // Every rank uses rank 0's clock: the slowest rank bounds the collective.
    MPI_Allreduce(MPI_IN_PLACE, &us, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    samples.push_back(us);
  }
  std::sort(samples.begin(), samples.end());
  return samples[samples.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0;
  int size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  int64_t min_bytes = argc > 1 ? std::atoll(argv[1]) : 4096;
  int64_t max_bytes = argc > 2 ? std::atoll(argv[2]) : (int64_t{64} << 20);
  for (int64_t bytes = min_bytes; bytes <= max_bytes; bytes *= 2) {
    std::vector<float> buf(static_cast<size_t>(bytes / 4), 0.0f);
    // About 0.1 s of work per repetition, at least 3 calls.
    int iters = static_cast<int>(std::clamp<int64_t>((int64_t{1} << 29) / bytes, 3, 2000));
    time_allreduce_us(buf, std::max(1, iters / 10), 1);  // warm-up
    double us = time_allreduce_us(buf, iters, 5);
    double busbw = 2.0 * (size - 1) / size * static_cast<double>(bytes) / (us * 1e3);
    if (rank == 0) {
      std::printf(
          "{\"bench\":\"allreduce\",\"backend\":\"mpi\",\"ranks\":%d,\"bytes\":%lld,"
          "\"time_us\":%.2f,\"busbw_gbps\":%.3f}\n",
          size, static_cast<long long>(bytes), us, busbw);
      std::fflush(stdout);
    }
  }
  MPI_Finalize();
  return 0;
}
