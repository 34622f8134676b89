#include "tandem/sim/task_graph.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "tandem/core/error.h"

namespace tandem::sim {
namespace {

TEST(TaskGraph, OneResourceRunsItsTasksBackToBack) {
  TaskGraph g;
  const auto r = g.add_resource("rank 0", "compute");
  g.add_task("a", 1.5, {r});
  g.add_task("b", 2.0, {r});
  const auto t = g.run();
  EXPECT_DOUBLE_EQ(t[0].start_s, 0);
  EXPECT_DOUBLE_EQ(t[1].start_s, 1.5);
  EXPECT_DOUBLE_EQ(t[1].end_s, 3.5);
}

TEST(TaskGraph, ACollectiveStartsWhenEveryLaneIsFreeAndItsDepsAreDone) {
  TaskGraph g;
  const auto c0 = g.add_resource("rank 0", "compute"), c1 = g.add_resource("rank 1", "compute");
  const auto m0 = g.add_resource("rank 0", "comm"), m1 = g.add_resource("rank 1", "comm");
  const int a = g.add_task("backward", 1, {c0});
  const int b = g.add_task("backward", 3, {c1});  // the slow rank
  const int ar = g.add_task("all_reduce", 2, {m0, m1}, {a, b});
  const int after = g.add_task("optimizer", 1, {c0}, {ar});
  const auto t = g.run();
  EXPECT_DOUBLE_EQ(t[ar].start_s, 3);
  EXPECT_DOUBLE_EQ(t[after].end_s, 6);
}

TEST(TaskGraph, OrderedResourcesBlockBehindTheirHeadUnorderedOnesDoNot) {
  for (bool ordered : {true, false}) {
    TaskGraph g;
    const auto x = g.add_resource("w", "compute");
    const auto nic = g.add_resource("server", "nic", ordered);
    const int late = g.add_task("late producer", 5, {x});
    const int first = g.add_task("push of the late worker", 1, {nic}, {late});
    const int second = g.add_task("push of a ready worker", 1, {nic});
    const auto t = g.run();
    if (ordered) {
      EXPECT_DOUBLE_EQ(t[second].start_s, 6) << "in-order lane: waits behind its head";
    } else {
      EXPECT_DOUBLE_EQ(t[second].start_s, 0) << "arrival order: the ready push goes first";
      EXPECT_DOUBLE_EQ(t[first].start_s, 5);
    }
  }
}

TEST(TaskGraph, UnorderedResourceServesEarliestReadyFirst) {
  TaskGraph g;
  const auto a = g.add_resource("a", "compute"), b = g.add_resource("b", "compute");
  const auto nic = g.add_resource("server", "nic", false);
  const auto blocker = g.add_task("busy", 10, {nic});
  const int ra = g.add_task("a computes", 4, {a});
  const int rb = g.add_task("b computes", 2, {b});
  const int pa = g.add_task("push a", 1, {nic}, {ra});
  const int pb = g.add_task("push b", 1, {nic}, {rb});
  const auto t = g.run();
  EXPECT_DOUBLE_EQ(t[blocker].end_s, 10);
  EXPECT_DOUBLE_EQ(t[pb].start_s, 10);  // ready at 2, before a's at 4
  EXPECT_DOUBLE_EQ(t[pa].start_s, 11);
}

TEST(TaskGraph, LateDependenciesAndCycles) {
  TaskGraph g;
  const auto r0 = g.add_resource("s0", "compute"), r1 = g.add_resource("s1", "compute");
  const int consumer = g.add_task("forward on stage 1", 1, {r1});
  const int producer = g.add_task("forward on stage 0", 2, {r0});
  g.add_dependency(consumer, producer);
  EXPECT_DOUBLE_EQ(g.run()[consumer].start_s, 2);
  g.add_dependency(producer, consumer);
  EXPECT_THROW(g.run(), InternalError);
}

TEST(TaskGraph, BadTasksAreRefused) {
  TaskGraph g;
  const auto r = g.add_resource("r", "compute");
  EXPECT_THROW(g.add_task("negative", -1, {r}), InvalidArgument);
  EXPECT_THROW(g.add_task("nowhere", 1, {}), InvalidArgument);
  EXPECT_THROW(g.add_task("unknown lane", 1, {7}), InvalidArgument);
  EXPECT_THROW(g.add_task("future dep", 1, {r}, {3}), InvalidArgument);
}

TEST(TaskGraph, TraceHasOneEventPerTaskAndLane) {
  TaskGraph g;
  const auto c = g.add_resource("rank 0", "compute"), m = g.add_resource("rank 0", "comm");
  g.add_task("forward", 1e-3, {c});
  g.add_task("all_reduce", 2e-3, {m}, {0});
  const auto path = std::filesystem::temp_directory_path() / "tandem_sim_trace_test.json";
  write_trace(g, g.run(), path.string());
  std::ifstream in(path);
  const auto doc = nlohmann::json::parse(in);
  int complete = 0;
  for (const auto& e : doc["traceEvents"]) {
    if (e["ph"] == "X") {
      ++complete;
      if (e["name"] == "all_reduce") {
        EXPECT_DOUBLE_EQ(e["ts"].get<double>(), 1000);
        EXPECT_DOUBLE_EQ(e["dur"].get<double>(), 2000);
      }
    }
  }
  EXPECT_EQ(complete, 2);
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace tandem::sim
