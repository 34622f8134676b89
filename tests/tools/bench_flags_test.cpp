// Every `tandem bench` number and list goes through one checked parser: a
// value with trailing junk, a hex or blank-padded number, an empty list entry
// or an unknown name exits 2 with a message naming the command, the flag and
// the text, before any rank starts. (Regression: `bench memory --ranks 2x`
// ran as 2.)
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/support/command.h"

namespace {

const std::string kTandem = TANDEM_BINARY_DIR "/tools/tandem";

struct Case {
  std::string args;
  std::string words;
};

void expect_usage_errors(const std::vector<Case>& cases) {
  for (const auto& c : cases) {
    auto r = tandem::testing::run_command(kTandem + " bench " + c.args, 60);
    EXPECT_EQ(r.exit_code, 2) << c.args << "\n" << r.output;
    EXPECT_NE(r.output.find("tandem: error: " + c.words), std::string::npos) << c.args << "\n"
                                                                             << r.output;
  }
}

TEST(BenchFlags, CommNumbersAndListsAreChecked) {
  expect_usage_errors({
      {"comm --min-bytes 4096x", "bench comm: --min-bytes takes whole numbers (got '4096x')"},
      {"comm --max-bytes 0x1000", "bench comm: --max-bytes takes whole numbers (got '0x1000')"},
      {"comm --rounds ' 3'", "bench comm: --rounds takes whole numbers (got ' 3')"},
      {"comm --iters 99999999999", "bench comm: --iters 99999999999 is out of range"},
      {"comm --op all_reduce,", "bench comm: --op has an empty entry (in 'all_reduce,')"},
      {"comm --op ,all_reduce", "bench comm: --op has an empty entry (in ',all_reduce')"},
      {"comm --backend gloo,pigeon", "bench comm: --backend pigeon is not one of auto, shm"},
      {"comm --dtype float8", "bench comm: --dtype float8 is not one of float32, float64"},
  });
}

TEST(BenchFlags, DdpNumbersAndListsAreChecked) {
  expect_usage_errors({
      {"ddp --ranks 2x", "bench ddp: --ranks takes whole numbers (got '2x')"},
      {"ddp --mlp-hidden 64,32x", "bench ddp: --mlp-hidden takes whole numbers (got '32x')"},
      {"ddp --mlp-hidden 64,,32", "bench ddp: --mlp-hidden has an empty entry (in '64,,32')"},
      {"ddp --bucket-cap-mb 25MB", "bench ddp: --bucket-cap-mb takes a finite number (got '25MB')"},
      {"ddp --bucket-cap-mb inf", "bench ddp: --bucket-cap-mb takes a finite number (got 'inf')"},
  });
}

TEST(BenchFlags, FsdpNumbersAreChecked) {
  expect_usage_errors({
      {"fsdp --ranks 2x", "bench fsdp: --ranks takes whole numbers (got '2x')"},
      {"fsdp --steps 1.5", "bench fsdp: --steps takes whole numbers (got '1.5')"},
  });
}

TEST(BenchFlags, MemoryNumbersAndListsAreChecked) {
  expect_usage_errors({
      {"memory --ranks 2x", "bench memory: --ranks takes whole numbers (got '2x')"},
      {"memory --ranks 2,x4", "bench memory: --ranks takes whole numbers (got 'x4')"},
      {"memory --ranks 2,,4", "bench memory: --ranks has an empty entry (in '2,,4')"},
      {"memory --ranks 0", "bench memory: --ranks 0: each entry must be in [1, 16]"},
      {"memory --strategies ddp,zero9",
       "bench memory: --strategies zero9 is not one of ddp, zero1, zero2, zero3"},
      {"memory --optimizer lion", "bench memory: --optimizer lion is not one of adamw, sgd"},
  });
}

TEST(BenchFlags, PipelineNumbersAndListsAreChecked) {
  expect_usage_errors({
      {"pipeline --stages 2,4x", "bench pipeline: --stages takes whole numbers (got '4x')"},
      {"pipeline --micro-batches 4,8e",
       "bench pipeline: --micro-batches takes whole numbers (got '8e')"},
      {"pipeline --schedules gpipe,zigzag",
       "bench pipeline: --schedules zigzag is not one of gpipe, 1f1b"},
      {"pipeline --work nap", "bench pipeline: --work nap is not one of sleep, compute"},
      {"pipeline --forward-ms 20ms", "bench pipeline: --forward-ms takes a finite number"},
      {"pipeline --backend nccl", "bench pipeline: --backend nccl is not one of shm, gloo"},
  });
}

TEST(BenchFlags, StrategiesNumbersAndListsAreChecked) {
  expect_usage_errors({
      {"strategies --ranks 4x", "bench strategies: --ranks takes whole numbers (got '4x')"},
      {"strategies --lr 0.01x", "bench strategies: --lr takes a finite number (got '0.01x')"},
      {"strategies --strategies ddp,", "bench strategies: --strategies has an empty entry"},
      {"strategies --strategies ''", "bench strategies: --strategies takes at least one entry"},
      {"strategies --strategies ddp,hogwild",
       "bench strategies: --strategies hogwild is not one of ddp, ddp-backup"},
  });
}

// The parent passes its options to its child ranks as JSON; the flag is for
// that alone.
TEST(BenchFlags, TheChildFlagTakesOnlyJson) {
  auto r = tandem::testing::run_command(kTandem + " bench ddp --child nonsense", 60);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--child takes the options a parent bench passes as a JSON object"),
            std::string::npos)
      << r.output;
}

}  // namespace
