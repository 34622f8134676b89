// `tandem bench comm --backend mpi,mpi-raw` under mpirun: the raw-MPI
// baseline (bench/mpi_raw.cpp, outside Tandem's API since it has no
// deadline) still runs beside Tandem's MPI backend, for 32- and 16-bit
// floats, and every row carries its ratio to it.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "tandem/launch/launcher.h"
#include "tests/support/command.h"

namespace {

#ifdef TANDEM_TEST_MPIRUN
TEST(TandemBenchCommMpi, RawMpiRunsBesideTheMpiBackend) {
  for (const std::string dtype : {"float32", "bfloat16"}) {
    // The ranks' store listens on a port of their own, not the default 29500.
    const std::string port = std::to_string(tandem::launch::pick_free_port("127.0.0.1"));
    auto r = tandem::testing::run_command(
        "MASTER_PORT=" + port + " " + TANDEM_TEST_MPIRUN +
            " --allow-run-as-root --oversubscribe --bind-to none -x MASTER_PORT -np "
            "2 " TANDEM_BINARY_DIR
            "/tools/tandem bench comm --backend mpi,mpi-raw --op all_reduce --min-bytes 4096 "
            "--max-bytes 16384 --iters 3 --rounds 1 --json - --dtype " +
            dtype,
        120);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    int mpi = 0, raw = 0;
    std::istringstream lines(r.output);
    for (std::string line; std::getline(lines, line);) {
      if (line.empty() || line[0] != '{') continue;
      const auto j = nlohmann::json::parse(line);
      EXPECT_EQ(j["ranks"], 2) << line;
      EXPECT_EQ(j["dtype"], dtype) << line;
      EXPECT_GT(j["busbw_gbps"].get<double>(), 0.0) << line;
      ASSERT_TRUE(j.contains("busbw_vs_mpi_raw")) << line;
      if (j["backend"] == "mpi-raw") {
        ++raw;
        EXPECT_DOUBLE_EQ(j["busbw_vs_mpi_raw"].get<double>(), 1.0) << line;
      } else {
        ++mpi;
        EXPECT_EQ(j["backend"], "mpi") << line;
      }
    }
    EXPECT_EQ(mpi, 2) << r.output;  // 4 and 16 KiB
    EXPECT_EQ(raw, 2) << r.output;
  }
}
#endif

}  // namespace
