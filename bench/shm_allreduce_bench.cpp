// How fast is the shm backend's all_reduce? Forks --ranks processes on this
// host, connects them with make_shm_communicator, and times float32 sum
// all_reduce from --min-bytes to --max-bytes (doubling), the same way as
// mpi_allreduce_bench (median of 5 repetitions of back-to-back calls, slowest
// rank). Prints one JSON line per size:
//   {"bench":"allreduce","backend":"shm","ranks":2,"bytes":...,"time_us":...,"busbw_gbps":...}
// busbw = 2 (n - 1) / n * bytes / time, as in nccl-tests.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include "tandem/comm/backend.h"
#include "tandem/comm/store.h"

namespace {

struct Flags {
  int ranks = 2;
  int64_t min_bytes = 4096;
  int64_t max_bytes = int64_t{64} << 20;
};

Flags parse_flags(int argc, char** argv) {
  Flags f;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string name = argv[i];
    int64_t value = std::atoll(argv[i + 1]);
    if (name == "--ranks") f.ranks = static_cast<int>(value);
    else if (name == "--min-bytes") f.min_bytes = value;
    else if (name == "--max-bytes") f.max_bytes = value;
    else {
      std::fprintf(stderr, "usage: %s [--ranks N] [--min-bytes B] [--max-bytes B]\n", argv[0]);
      std::exit(2);
    }
  }
  return f;
}

int free_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

// Median over repetitions of the mean time of `iters` calls, each repetition
// timed by the slowest rank.
double time_allreduce_us(tandem::Communicator& comm, const at::Tensor& t, int iters, int reps) {
  std::vector<double> samples;
  at::Tensor slowest = at::empty({1}, at::kDouble);
  for (int rep = 0; rep < reps; ++rep) {
    comm.barrier();
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < iters; ++i) comm.all_reduce(t);
    auto t1 = std::chrono::steady_clock::now();
    slowest.fill_(std::chrono::duration<double, std::micro>(t1 - t0).count() / iters);
    comm.all_reduce(slowest, tandem::ReduceOp::kMax);
    samples.push_back(slowest.item<double>());
  }
  std::sort(samples.begin(), samples.end());
  return samples[samples.size() / 2];
}

void run_rank(int rank, const Flags& flags, int port) {
  at::set_num_threads(1);
  auto timeout = std::chrono::milliseconds(120'000);
  tandem::BackendOptions options;
  options.rank = rank;
  options.size = flags.ranks;
  options.store = tandem::make_tcp_store("127.0.0.1", port, rank == 0, timeout);
  options.timeout = timeout;
  options.group_name = "bench";
  auto comm = tandem::make_shm_communicator(options);
  for (int64_t bytes = flags.min_bytes; bytes <= flags.max_bytes; bytes *= 2) {
    at::Tensor t = at::zeros({bytes / 4}, at::kFloat);
    int iters = static_cast<int>(std::clamp<int64_t>((int64_t{1} << 29) / bytes, 3, 2000));
    time_allreduce_us(*comm, t, std::max(1, iters / 10), 1);  // warm-up
    double us = time_allreduce_us(*comm, t, iters, 5);
    double busbw = 2.0 * (flags.ranks - 1) / flags.ranks * static_cast<double>(bytes) / (us * 1e3);
    if (rank == 0) {
      std::printf(
          "{\"bench\":\"allreduce\",\"backend\":\"shm\",\"ranks\":%d,\"bytes\":%lld,"
          "\"time_us\":%.2f,\"busbw_gbps\":%.3f}\n",
          flags.ranks, static_cast<long long>(bytes), us, busbw);
      std::fflush(stdout);
    }
  }
  comm->barrier();  // rank 0 serves the store: nobody leaves early
}

}  // namespace

int main(int argc, char** argv) {
  Flags flags = parse_flags(argc, argv);
  int port = free_port();
  std::vector<pid_t> pids;
  for (int r = 0; r < flags.ranks; ++r) {
    pid_t pid = fork();
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      int code = 0;
      try {
        run_rank(r, flags, port);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "shm_allreduce_bench: error: rank %d: %s\n", r, e.what());
        code = 1;
      }
      std::fflush(stdout);
      _exit(code);
    }
    pids.push_back(pid);
  }
  int failed = 0;
  for (pid_t pid : pids) {
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) failed = 1;
  }
  return failed;
}
