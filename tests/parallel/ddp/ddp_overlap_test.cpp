// Overlap: on ResNet-18 with the default 25 MiB buckets, the trace of one
// synchronised backward shows a bucket's all-reduce launched before backward
// ends, so communication runs while gradients are still being computed.
#include <ATen/ops/randint.h>
#include <ATen/ops/randn.h>
#include <gtest/gtest.h>
#include <torch/nn/functional/loss.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "tandem/comm/backend.h"
#include "tandem/parallel/ddp/distributed_data_parallel.h"
#include "tandem/train/models/models.h"
#include "tests/support/multiproc.h"

namespace tandem::parallel {
namespace {

TEST(DdpOverlap, ResNet18BucketLaunchesBeforeBackwardEnds) {
  testing::expect_ranks_succeed(2, [](int rank, int size, int port) {
    auto store = make_tcp_store("127.0.0.1", port, rank == 0, Millis(60'000));
    auto comm = make_shm_communicator(BackendOptions{
        rank, size, with_prefix(store, "overlap"), Millis(60'000), "ovl-" + std::to_string(port)});
    at::manual_seed(0);
    auto model = train::make_model("resnet18");
    DdpOptions o;
    o.trace = std::make_shared<TraceRecorder>(rank);
    DistributedDataParallel ddp(model.ptr(), comm, o);
    ASSERT_GE(ddp.bucket_plan().buckets.size(), 2u);
    at::manual_seed(rank);
    at::Tensor x = at::randn({4, 3, 32, 32});
    at::Tensor y = at::randint(0, 10, {4}, at::kLong);
    torch::nn::functional::cross_entropy(model.forward(x), y).backward();
    EXPECT_GE(ddp.last_stats().buckets_launched_during_backward, 1);

    auto path = std::filesystem::temp_directory_path() /
                ("tandem_overlap_" + std::to_string(port) + "_" + std::to_string(rank) + ".json");
    o.trace->write(path.string());
    std::ifstream in(path);
    auto trace = nlohmann::json::parse(in);
    std::filesystem::remove(path);
    double backward_end = -1;
    std::vector<double> launches;
    for (const auto& e : trace["traceEvents"]) {
      std::string name = e["name"];
      if (name == "backward (hooks)") backward_end = e["ts"].get<double>() + e["dur"].get<double>();
      if (name.rfind("all_reduce bucket", 0) == 0) launches.push_back(e["ts"].get<double>());
    }
    ASSERT_GT(backward_end, 0) << trace.dump();
    ASSERT_EQ(launches.size(), ddp.bucket_plan().buckets.size()) << trace.dump();
    EXPECT_LT(*std::min_element(launches.begin(), launches.end()), backward_end) << trace.dump();
  });
}

}  // namespace
}  // namespace tandem::parallel
