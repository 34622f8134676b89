// `tandem train --strategy zero3` under tandem-run writes a sharded
// checkpoint and reports its memory; `tandem checkpoint consolidate` folds
// the shards into one archive that plain LibTorch loads.
#include <ATen/ops/allclose.h>
#include <gtest/gtest.h>
#include <torch/serialize.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "tandem/train/models/models.h"
#include "tandem/train/sharded_checkpoint.h"
#include "tests/support/command.h"

namespace {

std::string run(const std::string& command, int& exit_code) {
  auto r = tandem::testing::run_command(command, 120);
  exit_code = r.exit_code;
  return r.output;
}

const std::string kTandem = TANDEM_BINARY_DIR "/tools/tandem";
const std::string kRun = TANDEM_BINARY_DIR "/tools/tandem-run";

TEST(TandemCheckpoint, Zero3RunConsolidatesIntoAPlainModel) {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("tandem_consolidate_" + std::to_string(getpid()));
  std::filesystem::remove_all(dir);
  int code = -1;
  std::string out = run(kRun + " --nproc-per-node 2 -- " + kTandem +
                            " train --model mlp --data synthetic-mnist --dataset-size 256 "
                            "--steps 6 --batch-size 8 --strategy zero3 --optimizer adamw "
                            "--checkpoint-dir " +
                            (dir / "ckpt").string(),
                        code);
  ASSERT_EQ(code, 0) << out;
  EXPECT_NE(out.find("model state on rank 0 (zero3): parameters"), std::string::npos) << out;
  EXPECT_TRUE(std::filesystem::exists(dir / "ckpt" / "step-6" / "rank-1.ckpt")) << out;

  const std::string file = (dir / "model.pt").string();
  out = run(kTandem + " checkpoint consolidate " + (dir / "ckpt").string() + " " + file, code);
  ASSERT_EQ(code, 0) << out;
  auto model = tandem::train::make_model("mlp");
  std::shared_ptr<torch::nn::Module> module = model.ptr();
  torch::load(module, file);  // plain LibTorch
  // The weights are the trained ones, as the sharded files hold them.
  auto shards = tandem::train::read_sharded_checkpoint((dir / "ckpt" / "step-6").string(), 0, 1);
  auto named = model.ptr()->named_parameters();
  int checked = 0;
  for (const auto& g : shards.state.groups) {
    for (size_t e = 0; e < g.names.size(); ++e) {
      const auto& en = g.layout.entries[e];
      EXPECT_TRUE(at::allclose(named[g.names[e]],
                               g.params.narrow(0, en.offset, en.numel).view(en.shape), 0, 0))
          << g.names[e];
      ++checked;
    }
  }
  EXPECT_EQ(checked, static_cast<int>(named.size()));

  out = run(kTandem + " checkpoint consolidate " + (dir / "nowhere").string() + " x.pt", code);
  EXPECT_EQ(code, 2) << out;
  EXPECT_NE(out.find("does not exist"), std::string::npos) << out;
  std::filesystem::remove_all(dir);
}

}  // namespace
