// --resume in its two forms. The default resumes if there is something to
// resume and otherwise starts at step 0, saying which (so one command
// serves the first start and every restart under tandem-run
// --max-restarts); --resume=require fails without a checkpoint, as
// --resume did before. A corrupt checkpoint is an error in both forms,
// never a fresh start.
#include "src/train/resume.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <sstream>
#include <string>

#include "tandem/comm/rendezvous.h"
#include "tandem/core/error.h"
#include "tandem/train/checkpoint.h"
#include "tandem/train/trainer.h"
#include "tests/train/data/temp_dir.h"

namespace tandem::train {
namespace {

using testing::expect_error;
using testing::TempDir;

// 8 steps of the MLP on 128 synthetic samples, checkpointed into `dir`.
TrainerOptions short_run(const std::string& dir, ResumeMode resume) {
  TrainerOptions o;
  o.data.synthetic_size = 128;
  o.run.steps = 8;
  o.run.batch_size = 16;
  o.run.seed = 4;
  o.observe.eval_batches = 1;
  o.checkpoint.dir = dir;
  o.checkpoint.resume = resume;
  return o;
}

std::shared_ptr<Communicator> one_process() { return tandem::init(RendezvousInfo{}, {}); }

// A run into `dir` interrupted after 2 steps: DIR/step-2.ckpt. Returns its options.
TrainerOptions interrupted_run(const std::string& dir, const std::shared_ptr<Communicator>& comm) {
  TrainerOptions o = short_run(dir, ResumeMode::kOff);
  o.run.stop_at_step = 2;
  train(o, comm, nullptr);
  return o;
}

TEST(Resume, StartsAtStepZeroWhereThereIsNothingYetAndSaysSo) {
  auto comm = one_process();
  TempDir dir;
  const std::string absent = dir.file("not-made-yet");
  for (const std::string& d : {absent, dir.path().string()}) {  // absent, then empty
    std::ostringstream out;
    const TrainSummary s = train(short_run(d, ResumeMode::kIfPresent), comm, &out);
    EXPECT_EQ(s.steps, 8) << d;
    EXPECT_NE(out.str().find("no checkpoint in '" + d + "' yet; starting from step 0"),
              std::string::npos)
        << out.str();
    EXPECT_EQ(out.str().find("resuming from"), std::string::npos) << out.str();
    EXPECT_EQ(latest_checkpoint(d), (std::filesystem::path(d) / "step-8.ckpt").string());
  }
}

// A restart with the same command: the first run stops at step 3, the
// second resumes there and ends where a straight run ends, bitwise.
TEST(Resume, TheSameCommandResumesAfterAnInterruption) {
  auto comm = one_process();
  TempDir straight_dir, dir;
  const TrainSummary straight =
      train(short_run(straight_dir.path().string(), ResumeMode::kOff), comm, nullptr);

  TrainerOptions o = short_run(dir.path().string(), ResumeMode::kIfPresent);
  o.run.stop_at_step = 3;
  std::ostringstream first_out;
  EXPECT_EQ(train(o, comm, &first_out).steps, 3);
  EXPECT_NE(first_out.str().find("starting from step 0"), std::string::npos) << first_out.str();

  o.run.stop_at_step = 0;
  std::ostringstream out;
  const TrainSummary resumed = train(o, comm, &out);
  EXPECT_EQ(resumed.steps, 5);
  EXPECT_NE(out.str().find("resuming from '" + dir.file("step-3.ckpt") + "' at step 3"),
            std::string::npos)
      << out.str();
  EXPECT_EQ(out.str().find("no checkpoint in"), std::string::npos) << out.str();
  EXPECT_EQ(resumed.state_digest, straight.state_digest);
}

TEST(Resume, RequireFailsWithoutACheckpoint) {
  auto comm = one_process();
  TempDir dir;
  for (const std::string& d : {dir.file("not-made-yet"), dir.path().string()}) {
    expect_error<CheckpointError>(
        [&] { train(short_run(d, ResumeMode::kRequire), comm, nullptr); },
        {(std::filesystem::path(d) / "latest").string(), "no checkpoint to resume from"});
    EXPECT_FALSE(std::filesystem::exists(std::filesystem::path(d) / "latest")) << d;
  }
}

TEST(Resume, ACorruptCheckpointIsAnErrorInBothForms) {
  auto comm = one_process();
  TempDir dir;
  interrupted_run(dir.path().string(), comm);
  const std::string path = dir.file("step-2.ckpt");
  auto bytes = testing::read_all(path);
  bytes[bytes.size() - 5] ^= 0x10;
  testing::write_all(path, bytes);
  for (ResumeMode mode : {ResumeMode::kIfPresent, ResumeMode::kRequire}) {
    expect_error<CheckpointError>(
        [&] { train(short_run(dir.path().string(), mode), comm, nullptr); }, {path, "checksum"});
  }
  // DIR/latest naming a file that is gone is no fresh start either.
  std::filesystem::remove(path);
  expect_error<CheckpointError>(
      [&] { train(short_run(dir.path().string(), ResumeMode::kIfPresent), comm, nullptr); },
      {path, "cannot open"});
}

TEST(Resume, FindResumePointChecksTheRunsSettings) {
  auto comm = one_process();
  TempDir dir;
  TrainerOptions o = interrupted_run(dir.path().string(), comm);
  EXPECT_FALSE(find_resume_point(o, 0, 1).has_value());  // resume off
  o.checkpoint.resume = ResumeMode::kIfPresent;
  const auto point = find_resume_point(o, 0, 1);
  ASSERT_TRUE(point.has_value());
  EXPECT_EQ(point->base.step, 2);
  EXPECT_EQ(point->base.samples_in_epoch, 32);
  EXPECT_FALSE(point->shards.has_value());
  o.optimizer.kind = OptimizerKind::kAdamW;
  expect_error<CheckpointError>([&] { find_resume_point(o, 0, 1); },
                                {"step-2.ckpt", "field 'optimizer'", "--optimizer sgd"});
}

}  // namespace
}  // namespace tandem::train
