// `tandem train`'s flags from issue 14: --comm-timeout and
// --rendezvous-timeout reach the communicator (bad values exit 2 naming the
// flag), --resume serves the first start and the restart alike
// (--resume=require fails without a checkpoint), and --data-format is
// parsed like every other choice.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include "tests/support/command.h"
#include "tests/support/multiproc.h"

namespace {

using tandem::testing::CommandResult;

CommandResult run(const std::string& command) { return tandem::testing::run_command(command, 120); }

const std::string kTandem = TANDEM_BINARY_DIR "/tools/tandem";
const std::string kRun = TANDEM_BINARY_DIR "/tools/tandem-run";
const std::string kTrainMlp = kTandem + " train --model mlp --steps 3 --dataset-size 256 ";

// A directory under the system's temporary one, removed with the object.
class ScratchDir {
 public:
  ScratchDir() {
    static int made = 0;
    path_ = std::filesystem::temp_directory_path() /
            ("tandem_train_flags_" + std::to_string(getpid()) + "_" + std::to_string(made++));
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string str() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

TEST(TandemTrainFlags, BadTimeoutsAndFormatsExitTwoNamingTheFlag) {
  struct Case {
    std::string args, words;
  };
  for (const auto& c : std::vector<Case>{
           {"--comm-timeout 0", "--comm-timeout takes a positive number of seconds"},
           {"--comm-timeout -3", "--comm-timeout takes a positive number of seconds"},
           {"--comm-timeout 2x", "(got '2x')"},
           {"--rendezvous-timeout abc", "--rendezvous-timeout takes a positive number"},
           {"--data-format imagenet", "--data-format imagenet is not one of auto, mnist"},
           {"--resume=maybe", "--resume maybe is not one of false, true, require"},
       }) {
    const CommandResult r = run(kTrainMlp + c.args);
    EXPECT_EQ(r.exit_code, 2) << c.args << "\n" << r.output;
    EXPECT_NE(r.output.find(c.words), std::string::npos) << c.args << "\n" << r.output;
  }
}

TEST(TandemTrainFlags, HelpShowsTheNewFlags) {
  const CommandResult r = run(kTandem + " train --help");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  for (const std::string w : {"--comm-timeout SECONDS", "--rendezvous-timeout SECONDS",
                              "--data-format TEXT=auto", "--resume=require", "--strategy TEXT=ddp",
                              "--schedule TEXT=1f1b", "--wrap-policy TEXT=auto"}) {
    EXPECT_NE(r.output.find(w), std::string::npos) << w << "\n" << r.output;
  }
}

// Rank 0 of a 2-rank job whose rank 1 never starts: the rendezvous gives up
// after the flag's 2 s, not InitOptions' default 120 s.
TEST(TandemTrainFlags, RendezvousTimeoutReachesTheRendezvous) {
  const auto start = std::chrono::steady_clock::now();
  const CommandResult r = run(
      "env RANK=0 WORLD_SIZE=2 LOCAL_RANK=0 LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 "
      "MASTER_PORT=" +
      std::to_string(tandem::testing::free_port()) + " " + kTrainMlp + "--rendezvous-timeout 2");
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("never arrived"), std::string::npos) << r.output;
  EXPECT_LT(seconds, 60) << r.output;
}

// Rank 1 sleeps 5 s before each backward; rank 0's all-reduce gives up
// after the flag's 1 s instead of waiting (the default 300 s would let the
// run succeed).
TEST(TandemTrainFlags, CommTimeoutReachesTheCollectives) {
  const CommandResult r = run(kRun + " --nproc-per-node 2 -- " + kTrainMlp +
                              "--inject-delay ranks=1,ms=5000 --comm-timeout 1");
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("timed out"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("raise --comm-timeout or TANDEM_COMM_TIMEOUT"), std::string::npos)
      << r.output;
}

// The same command for the first start and the restart, as under
// tandem-run --max-restarts.
TEST(TandemTrainFlags, ResumeStartsFreshOrResumesAndSaysWhich) {
  ScratchDir dir;
  const std::string command = kTrainMlp + "--checkpoint-dir " + dir.str() + " --resume";
  CommandResult r = run(command);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("no checkpoint in '" + dir.str() + "' yet; starting from step 0"),
            std::string::npos)
      << r.output;
  r = run(command);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("resuming from '" + dir.str() + "/step-3.ckpt' at step 3"),
            std::string::npos)
      << r.output;
  ScratchDir empty;
  r = run(kTrainMlp + "--checkpoint-dir " + empty.str() + " --resume=require");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("no checkpoint to resume from"), std::string::npos) << r.output;
}

}  // namespace
