// `tandem plan`'s search (lab/plan.h) on a hand-made profile and cluster:
// the ranking follows the predicted throughput, the memory limit sets
// configurations apart and changes the choice, failures weigh the rows by
// their goodput, and bad options are refused naming the flag.
#include "lab/plan.h"

#include <gtest/gtest.h>

#include <set>

#include "tandem/core/error.h"
#include "tests/support/command.h"

namespace tandem::lab {
namespace {

SimulationInputs inputs() {
  SimulationInputs in;
  in.compute.model = "test";
  in.compute.batch_size = 32;
  for (int i = 0; i < 8; ++i) {
    sim::LayerProfile l;
    l.name = "layer" + std::to_string(i);
    l.forward_s = 0.002;
    l.backward_s = 0.004;
    l.param_bytes = l.grad_bytes = 4 << 20;  // 4 MiB a layer
    l.activation_bytes = 1 << 20;
    l.output_bytes = 64 << 10;
    in.compute.layers.push_back(l);
  }
  in.compute.optimizer_s = 0.004;
  in.cluster.devices_per_node = 4;
  in.cluster.topology = sim::Topology::kFatTree;
  in.cluster.intra.nominal = {.alpha_s = 5e-6, .beta_s_per_byte = 1.0 / 25e9};
  in.cluster.network.nominal = {.alpha_s = 25e-6, .beta_s_per_byte = 1.0 / 1.25e9};
  return in;
}

PlanOptions options(int workers) {
  return PlanOptions{.workers = workers, .device_memory = 0, .mttf_hours = 0, .top = 10};
}

TEST(Plan, RanksEveryConfigurationByPredictedThroughput) {
  const Plan plan = make_plan(inputs(), train::TrainerOptions{}, options(8));
  std::set<std::string> strategies, layouts;
  for (size_t i = 0; i < plan.rows.size(); ++i) {
    strategies.insert(plan.rows[i].strategy);
    layouts.insert(plan.rows[i].layout);
    EXPECT_TRUE(plan.rows[i].fits);
    if (i > 0) {
      EXPECT_GE(plan.rows[i - 1].effective_samples_per_s, plan.rows[i].effective_samples_per_s);
    }
    EXPECT_DOUBLE_EQ(plan.rows[i].effective_samples_per_s, plan.rows[i].result.samples_per_s);
  }
  for (const char* s :
       {"ddp", "zero1", "zero2", "zero3", "pipeline", "ps", "gossip", "local-sgd"}) {
    EXPECT_TRUE(strategies.count(s)) << s;
  }
  EXPECT_TRUE(layouts.count("dp=4,pp=2 m=4")) << "pipelines of 2, 4 and 8 stages";
  EXPECT_TRUE(layouts.count("dp=1,pp=8 m=32"));
  EXPECT_FALSE(plan.recommendation.empty());
  // The recommendation names the best synchronous row.
  for (const PlanRow& r : plan.rows) {
    if (!r.synchronous) continue;
    EXPECT_EQ(plan.recommendation.rfind(r.strategy + " at " + r.layout, 0), 0u)
        << plan.recommendation;
    break;
  }
}

TEST(Plan, TheMemoryLimitSetsConfigurationsApartAndChangesTheChoice) {
  const SimulationInputs in = inputs();
  const Plan free = make_plan(in, train::TrainerOptions{}, options(8));
  int64_t ddp = 0, zero3 = 0;
  for (const PlanRow& r : free.rows) {
    if (r.strategy == "ddp") ddp = r.result.memory_bytes;
    if (r.strategy == "zero3") zero3 = r.result.memory_bytes;
  }
  ASSERT_GT(ddp, zero3);
  PlanOptions o = options(8);
  o.device_memory = (ddp + zero3) / 2;
  const Plan tight = make_plan(in, train::TrainerOptions{}, o);
  bool seen_unfit = false;
  for (const PlanRow& r : tight.rows) {
    EXPECT_EQ(r.fits, r.result.memory_bytes <= o.device_memory) << r.strategy << " " << r.layout;
    if (!r.fits) seen_unfit = true;
    if (seen_unfit) {
      EXPECT_FALSE(r.fits) << "fitting rows come first";
    }
    if (r.strategy == "ddp") {
      EXPECT_FALSE(r.fits);
    }
  }
  EXPECT_NE(tight.recommendation.rfind("ddp at", 0), 0u) << tight.recommendation;
}

TEST(Plan, FailuresWeighTheRowsByTheirGoodput) {
  SimulationInputs in = inputs();
  in.cluster.failures.checkpoint_write_s = 30;
  in.cluster.failures.keep_survivors_recovery_s = 60;
  PlanOptions o = options(8);
  o.mttf_hours = 1;
  const Plan plan = make_plan(in, train::TrainerOptions{}, o);
  for (const PlanRow& r : plan.rows) {
    EXPECT_LT(r.result.goodput_keep_survivors, 1.0);
    EXPECT_GT(r.result.checkpoint_interval_s, 0.0);
    EXPECT_DOUBLE_EQ(r.effective_samples_per_s,
                     r.result.samples_per_s * r.result.goodput_keep_survivors);
  }
  EXPECT_NE(plan.recommendation.find("of the time training"), std::string::npos)
      << plan.recommendation;
}

TEST(Plan, BadOptionsNameTheFlag) {
  const SimulationInputs in = inputs();
  for (PlanOptions o :
       {options(0), PlanOptions{.workers = 4, .device_memory = -1, .mttf_hours = 0, .top = 10},
        PlanOptions{.workers = 4, .device_memory = 0, .mttf_hours = -2, .top = 10}}) {
    try {
      make_plan(in, train::TrainerOptions{}, o);
      FAIL() << "accepted";
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("plan: --"), std::string::npos) << e.what();
    }
  }
}

TEST(TandemPlan, BadInputIsOneLineNamingTheFileOrFlag) {
  const std::string tandem = TANDEM_BINARY_DIR "/tools/tandem";
  const std::string cluster = TANDEM_SOURCE_DIR "/lab/clusters/fat-tree-10g.yaml";
  for (const auto& [args, words] : std::vector<std::pair<std::string, std::string>>{
           {"plan --profile /nonexistent.json --cluster " + cluster, "/nonexistent.json"},
           {"plan --cluster " + cluster, "--profile"},
           {"plan --profile /nonexistent.json --cluster " + cluster + " --workers x",
            "--workers"}}) {
    const testing::CommandResult r = testing::run_command(tandem + " " + args, 60);
    EXPECT_NE(r.exit_code, 0) << args << "\n" << r.output;
    EXPECT_NE(r.output.find(words), std::string::npos) << args << "\n" << r.output;
  }
}

}  // namespace
}  // namespace tandem::lab
