// The strategies over the other backends, not only shared memory: DDP,
// ZeRO-2 and FSDP against the single-process computation (float64, rtol
// 1e-9 after 10 steps) over Gloo (2 ranks) and over the hierarchical
// communicator (2 "hosts" of 2 ranks: shared memory inside, Gloo across).
// Over MPI: tests/parallel/mpi/.
#include <gtest/gtest.h>
#include <torch/nn/module.h>

#include "tests/parallel/support/equivalence.h"
#include "tests/support/multiproc.h"

namespace tandem::parallel {
namespace {

using testing::Backend;
using testing::Opt;

constexpr int kSteps = 10;

enum class Strategy { kDdp, kZero2, kFsdp };

using Case = std::tuple<Backend, Strategy>;

class StrategiesOverBackends : public ::testing::TestWithParam<Case> {};

TEST_P(StrategiesOverBackends, MatchOneProcess) {
  const auto [backend, strategy] = GetParam();
  const int world = backend == Backend::kHierarchical ? 4 : 2;
  testing::expect_ranks_succeed(world, [=](int rank, int size, int port) {
    auto comm = testing::connect(backend, rank, size, port, "over-backends");
    const testing::Workload w = testing::mlp_workload();
    torch::OrderedDict<std::string, at::Tensor> got;
    Opt opt = Opt::kAdamW;
    if (strategy == Strategy::kDdp) {
      opt = Opt::kSgdNesterov;
      got = testing::train_with_ddp(w, opt, comm, kSteps);
    } else if (strategy == Strategy::kZero2) {
      got = testing::train_with_zero(w, opt, comm, kSteps, 2);
    } else {
      got = testing::train_with_fsdp(w, opt, comm, kSteps);
    }
    auto ref = testing::train_one_process(w, opt, size, kSteps);
    testing::expect_same_parameters(got, testing::parameters_of(*ref), 1e-9, 1e-12,
                                    testing::backend_name(backend));
  });
}

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  const char* strategy[] = {"Ddp", "Zero2", "Fsdp"};
  return testing::backend_name(std::get<0>(info.param)) + "_" +
         strategy[static_cast<int>(std::get<1>(info.param))];
}

INSTANTIATE_TEST_SUITE_P(GlooAndHierarchical, StrategiesOverBackends,
                         ::testing::Combine(::testing::Values(Backend::kGloo,
                                                              Backend::kHierarchical),
                                            ::testing::Values(Strategy::kDdp, Strategy::kZero2,
                                                              Strategy::kFsdp)),
                         case_name);

}  // namespace
}  // namespace tandem::parallel
