// FullyShardedDataParallel's memory: at rest each rank holds 1/N of the
// parameters; at peak, the ZeRO-3 model state plus what the gathered units
// and the gradients in flight add, bounded to the byte.
#include <gtest/gtest.h>
#include <torch/optim/adamw.h>

#include <algorithm>
#include <cstdio>

#include "tandem/parallel/fsdp/fully_sharded_data_parallel.h"
#include "tests/parallel/support/equivalence.h"
#include "tests/support/multiproc.h"

namespace tandem::parallel {
namespace {

std::shared_ptr<Communicator> connect(int rank, int size, int port) {
  return testing::connect(testing::Backend::kShm, rank, size, port, "fsdp-memory");
}

// fp32 GPT-mini with 32 small blocks and AdamW. The ZeRO-3 model state per
// rank is 16/N bytes per parameter (4 parameter, 4 gradient, 8 AdamW) plus
// the largest unit's gathered parameters and gradients (8 bytes per
// element). What FSDP may hold on top, and the test bounds to the byte: a
// second gathered unit (the prefetch), a second unit's full gradients (the
// reduce-scatter in flight while the next unit accumulates) and the root
// unit's full gradients (its embeddings get theirs last).
// `overlap` turns on both prefetch and reduce-scatter overlap; without, FSDP
// holds one unit's full parameters and one unit's full gradients at a time.
void run_memory(int world, bool overlap) {
  const bool prefetch = overlap;
  testing::expect_ranks_succeed(world, [=](int rank, int size, int port) {
    auto comm = connect(rank, size, port);
    train::GptMiniOptions o = testing::small_gpt();
    o.vocab = 64;
    o.context = 32;
    o.layers = 32;
    const testing::Workload w = testing::gpt_workload(o, at::kFloat);
    auto model = w.make();
    FsdpOptions options;
    options.wrap.module_types = {"GptBlockImpl"};
    options.prefetch = prefetch;
    options.overlap_reduce_scatter = overlap;
    FullyShardedDataParallel fsdp(model, comm, options);
    ASSERT_EQ(fsdp.units().size(), 33u);
    int64_t total = 0, largest = 0, mine = 0, root = 0;
    for (const auto& unit : fsdp.units()) {
      total += unit.layout.numel;
      largest = std::max(largest, unit.layout.numel);
      mine += unit.shard.numel;
      if (unit.module.empty()) root = unit.layout.numel;
    }
    // At rest: this rank's shards only, about 1/N of the parameter bytes.
    EXPECT_EQ(fsdp.memory().now().parameters, mine * 4);
    EXPECT_NEAR(static_cast<double>(mine), static_cast<double>(total) / size, 33.0);
    EXPECT_EQ(fsdp.memory().now().gradients, 0);
    torch::optim::AdamW adamw(fsdp.parameters(), torch::optim::AdamWOptions(1e-3));
    fsdp.account_optimizer(&adamw);
    for (int s = 0; s < 3; ++s) {
      if (s == 1) fsdp.reset_peak_memory();  // from here on the optimizer state exists
      adamw.zero_grad();
      testing::rank_loss(w, *model, rank, s).backward();
      adamw.step();
      // During forward and backward: the unit in use, and the next one when prefetching.
      const auto& stats = fsdp.last_stats();
      EXPECT_EQ(stats.max_gathered_units, prefetch && s > 0 ? 2 : 1) << "step " << s;
      EXPECT_LE(stats.max_gathered_bytes, stats.max_gathered_units * largest * 4);
    }
    const double theory = 16.0 * total / size + 8.0 * largest;
    const auto& peak = fsdp.memory().peak();
    const double measured = static_cast<double>(fsdp.memory().peak_total());
    std::printf(
        "rank %d of %d, overlap %d: %lld parameters, largest unit %lld; peak model state "
        "%.0f bytes, theory %.0f (%+.1f%%); peak parameters %lld, gradients %lld, "
        "optimizer %lld\n",
        rank, size, int(overlap), static_cast<long long>(total), static_cast<long long>(largest),
        measured, theory, 100.0 * (measured - theory) / theory,
        static_cast<long long>(peak.parameters), static_cast<long long>(peak.gradients),
        static_cast<long long>(peak.optimizer_state));
    EXPECT_NEAR(measured, theory, 0.10 * theory);
    EXPECT_LE(peak.parameters, (mine + (prefetch ? 2 : 1) * largest) * 4);
    // Shard gradients, and two units' full gradients (one without overlap)
    // plus the root's.
    EXPECT_LE(peak.gradients, (mine + (overlap ? 2 : 1) * largest + root) * 4);
    EXPECT_EQ(peak.optimizer_state, mine * 8);
    // After the step: nothing gathered, no full gradient held.
    EXPECT_EQ(fsdp.memory().now().parameters, mine * 4);
    EXPECT_EQ(fsdp.memory().now().gradients, mine * 4);
  });
}

TEST(FullyShardedDataParallel, ModelStateIsAboutSixteenOverNBytesPerParameter) {
  for (int world : {2, 4}) {
    run_memory(world, /*overlap=*/true);
    run_memory(world, /*overlap=*/false);
  }
}

}  // namespace
}  // namespace tandem::parallel
