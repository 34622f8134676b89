// The raw-MPI baseline for Tandem's MPI backend: how long MPI_Allreduce of
// float32 takes, straight on MPI_COMM_WORLD, for 4 KiB..64 MiB. Run it under
// mpirun; rank 0 prints one JSON line per size:
//   {"bench":"mpi_raw_allreduce","ranks":N,"bytes":B,"time_us":T,"algbw_gbps":A,"busbw_gbps":BB}
// time_us is the slowest rank's mean per call; algbw = bytes / time, and
// busbw = algbw * 2 (n - 1) / n, the traffic per link of a ring all-reduce,
// comparable across rank counts (as in nccl-tests).
//
// Options: --min-bytes B, --max-bytes B (powers of 4 from min up to max),
// --warmup N, --iters N (default: enough for about 0.25 GiB per size, 5 to
// 1000 calls), --thread-multiple (initialise as Tandem does), --nonblocking
// (MPI_Iallreduce polled with MPI_Test, as Tandem does; prints
// "mpi_raw_iallreduce"). Numbers go through the benches' checked parser
// (bench/flag_values.h). Beside bench/mpi_raw.cpp (the in-process baseline)
// it is the one bench/ file that includes <mpi.h>, and it links no Tandem
// library: it is the baseline, not Tandem.
#include <mpi.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "bench/flag_values.h"

namespace {

struct Options {
  int64_t min_bytes = 4 << 10;
  int64_t max_bytes = 64 << 20;
  int warmup = 5;
  int iters = 0;  // 0: from the size
  bool thread_multiple = false;
  bool nonblocking = false;
};

// Returns the problem with the flags, or "" when there is none.
std::string parse(int argc, char** argv, Options& o) try {
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    auto value = [&] {
      return tandem::bench::parse_int(flag, i + 1 < argc ? argv[++i] : "", 0, INT32_MAX);
    };
    if (!std::strcmp(argv[i], "--min-bytes"))
      o.min_bytes = value();
    else if (!std::strcmp(argv[i], "--max-bytes"))
      o.max_bytes = value();
    else if (!std::strcmp(argv[i], "--warmup"))
      o.warmup = static_cast<int>(value());
    else if (!std::strcmp(argv[i], "--iters"))
      o.iters = static_cast<int>(value());
    else if (!std::strcmp(argv[i], "--thread-multiple"))
      o.thread_multiple = true;
    else if (!std::strcmp(argv[i], "--nonblocking"))
      o.nonblocking = true;
    else
      return "unknown flag '" + flag + "'";
  }
  if (o.min_bytes < 4 || o.max_bytes < o.min_bytes) return "need 4 <= --min-bytes <= --max-bytes";
  return "";
} catch (const tandem::InvalidArgument& e) {
  return e.what();
}

void all_reduce(std::vector<float>& buf, bool nonblocking) {
  int count = static_cast<int>(buf.size());
  if (!nonblocking) {
    MPI_Allreduce(MPI_IN_PLACE, buf.data(), count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    return;
  }
  MPI_Request request;
  MPI_Iallreduce(MPI_IN_PLACE, buf.data(), count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &request);
  int done = 0;
  while (!done) MPI_Test(&request, &done, MPI_STATUS_IGNORE);
}

// The slowest rank's mean seconds per call.
double time_all_reduce(std::vector<float>& buf, const Options& o, int iters) {
  for (int i = 0; i < o.warmup; ++i) all_reduce(buf, o.nonblocking);
  MPI_Barrier(MPI_COMM_WORLD);
  double start = MPI_Wtime();
  for (int i = 0; i < iters; ++i) all_reduce(buf, o.nonblocking);
  double mine = (MPI_Wtime() - start) / iters;
  double slowest = 0;
  MPI_Allreduce(&mine, &slowest, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return slowest;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  const std::string problem = parse(argc, argv, o);
  int provided = 0;
  MPI_Init_thread(&argc, &argv, o.thread_multiple ? MPI_THREAD_MULTIPLE : MPI_THREAD_SINGLE,
                  &provided);
  int rank = 0;
  int size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (!problem.empty()) {
    if (rank == 0) {
      std::fprintf(stderr,
                   "mpi_raw_allreduce_bench: %s; usage: mpirun -np N "
                   "mpi_raw_allreduce_bench [--min-bytes B] [--max-bytes B] [--warmup N] "
                   "[--iters N] [--thread-multiple] [--nonblocking]\n",
                   problem.c_str());
    }
    MPI_Finalize();
    return 2;
  }
  for (int64_t bytes = o.min_bytes; bytes <= o.max_bytes; bytes *= 4) {
    std::vector<float> buf(static_cast<size_t>(bytes / 4), 1.0f);
    int iters = o.iters > 0
                    ? o.iters
                    : static_cast<int>(std::clamp<int64_t>((int64_t{256} << 20) / bytes, 5, 1000));
    double seconds = time_all_reduce(buf, o, iters);
    double algbw = static_cast<double>(bytes) / seconds / 1e9;
    double busbw = algbw * 2.0 * (size - 1) / size;
    if (rank == 0) {
      std::printf(
          "{\"bench\":\"%s\",\"ranks\":%d,\"bytes\":%lld,\"time_us\":%.2f,\"algbw_gbps\":%.3f,"
          "\"busbw_gbps\":%.3f}\n",
          o.nonblocking ? "mpi_raw_iallreduce" : "mpi_raw_allreduce", size,
          static_cast<long long>(bytes), seconds * 1e6, algbw, busbw);
      std::fflush(stdout);
    }
  }
  MPI_Finalize();
  return 0;
}
