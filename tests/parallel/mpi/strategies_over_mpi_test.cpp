// DDP, ZeRO-1, ZeRO-2 and FSDP over the MPI backend against the
// single-process computation they replace (DESIGN.md, "Correctness rule"):
// float64, rtol 1e-9 after 10 steps. The binary runs under mpirun (see
// CMakeLists.txt): every rank runs every test, in definition order, so each
// test is collective.
#include <gtest/gtest.h>
#include <torch/nn/module.h>

#include <cstdlib>

#include "tandem/comm/backend.h"
#include "tests/parallel/support/equivalence.h"

namespace tandem::parallel {
namespace {

using testing::Opt;

constexpr int kSteps = 10;

// Long enough for a loaded machine, short enough that a rank stuck behind a
// failed peer ends well inside the ctest TIMEOUT.
constexpr Millis kTestTimeout{60'000};

// The MPI world this process belongs to (OpenMPI's mpirun sets these).
std::shared_ptr<Communicator> make_world() {
  const char* rank = std::getenv("OMPI_COMM_WORLD_RANK");
  const char* size = std::getenv("OMPI_COMM_WORLD_SIZE");
  BackendOptions options;
  options.rank = rank != nullptr ? std::atoi(rank) : 0;
  options.size = size != nullptr ? std::atoi(size) : 1;
  options.timeout = kTestTimeout;
  return make_mpi_communicator(options);
}

void expect_matches_one_process(const torch::OrderedDict<std::string, at::Tensor>& got,
                                const testing::Workload& w, Opt opt, int world) {
  auto ref = testing::train_one_process(w, opt, world, kSteps);
  testing::expect_same_parameters(got, testing::parameters_of(*ref), 1e-9, 1e-12, "over MPI");
}

TEST(StrategiesOverMpi, DdpMatchesOneProcess) {
  auto comm = make_world();
  ASSERT_EQ(comm->backend(), "mpi");
  const testing::Workload w = testing::mlp_workload();
  auto got = testing::train_with_ddp(w, Opt::kSgdNesterov, comm, kSteps);
  expect_matches_one_process(got, w, Opt::kSgdNesterov, comm->size());
}

TEST(StrategiesOverMpi, ZeroStagesOneAndTwoMatchOneProcess) {
  auto comm = make_world();
  const testing::Workload w = testing::mlp_workload();
  for (int stage : {1, 2}) {
    SCOPED_TRACE(stage == 1 ? "zero1" : "zero2");
    auto got = testing::train_with_zero(w, Opt::kAdamW, comm, kSteps, stage);
    expect_matches_one_process(got, w, Opt::kAdamW, comm->size());
  }
}

TEST(StrategiesOverMpi, FsdpMatchesOneProcess) {
  auto comm = make_world();
  const testing::Workload w = testing::mlp_workload();
  auto got = testing::train_with_fsdp(w, Opt::kAdamW, comm, kSteps);
  expect_matches_one_process(got, w, Opt::kAdamW, comm->size());
}

}  // namespace
}  // namespace tandem::parallel
