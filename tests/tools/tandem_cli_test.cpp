// The `tandem` command line: bad flags give exit 2 and a message naming the
// flag; `tandem bench comm` under tandem-run prints its table and JSON lines.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "tests/support/command.h"

namespace {

using tandem::testing::CommandResult;

CommandResult run(const std::string& command) { return tandem::testing::run_command(command, 120); }

const std::string kTandem = TANDEM_BINARY_DIR "/tools/tandem";
const std::string kRun = TANDEM_BINARY_DIR "/tools/tandem-run";

// A short mlp run of `tandem train`, for flag errors.
const std::string kTrainMlp = kTandem + " train --model mlp --steps 3 --dataset-size 256 ";

struct UsageCase {
  std::string args;
  std::string words;
};

// Each `prefix + args` exits 2 (a usage error) and says `words`.
void expect_usage_errors(const std::string& prefix, const std::vector<UsageCase>& cases) {
  for (const auto& c : cases) {
    CommandResult r = run(prefix + c.args);
    EXPECT_EQ(r.exit_code, 2) << c.args << "\n" << r.output;
    EXPECT_NE(r.output.find(c.words), std::string::npos) << c.args << "\n" << r.output;
  }
}

TEST(TandemCli, BadFlagsExitTwoNamingTheFlag) {
  const std::vector<UsageCase> cases = {
      {"bench comm --dtype float8", "--dtype float8 is not one of"},
      {"bench comm --op all_sum", "--op all_sum is not one of"},
      {"bench comm --min-bytes 0", "need 4 <= --min-bytes <= --max-bytes"},
      {"bench comm --step-factor 1", "--step-factor must be >= 2"},
      {"bench comm --backend pigeon", "--backend pigeon is not one of"},
      {"bench comm --backend mpi", "--backend mpi needs a launch under mpirun"},
      {"bench comm --iters x", "--iters"},
      {"", "A subcommand is required"},
  };
  expect_usage_errors(kTandem + " ", cases);
}

TEST(TandemCli, BenchCommPrintsATableAndJsonLines) {
  auto json = std::filesystem::temp_directory_path() /
              ("tandem_cli_test_" + std::to_string(getpid()) + ".jsonl");
  CommandResult r =
      run(kRun + " --nproc-per-node 2 -- " + kTandem +
          " bench comm --backend auto,gloo --op all --min-bytes 4096 --max-bytes 65536 "
          "--iters 3 --rounds 1 --json " +
          json.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("busbw_GB/s"), std::string::npos) << r.output;
  std::ifstream in(json);
  int lines = 0;
  for (std::string line; std::getline(in, line); ++lines) {
    auto j = nlohmann::json::parse(line);
    EXPECT_EQ(j["ranks"], 2);
    EXPECT_GT(j["busbw_gbps"].get<double>(), 0.0) << line;
    EXPECT_TRUE(j["backend"] == "auto:shm" || j["backend"] == "gloo") << line;
  }
  // 2 backends x 4 ops x 3 sizes (4, 16, 64 KiB).
  EXPECT_EQ(lines, 24);
  std::filesystem::remove(json);
}

}  // namespace

namespace {

TEST(TandemTrain, TwoRanksLearnAndPrintASummary) {
  CommandResult r = run(kRun + " --nproc-per-node 2 -- " + kTandem +
                        " train --model mlp --data synthetic-mnist --dataset-size 2048 --steps 40 "
                        "--batch-size 32 --lr 0.05 --log-every 10");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto at = r.output.find("summary: 40 steps, 2560 samples");
  ASSERT_NE(at, std::string::npos) << r.output;
  double first = 0, last = 0, eval_loss = 0, accuracy = 0;
  ASSERT_EQ(std::sscanf(r.output.c_str() + r.output.find("train loss", at),
                        "train loss %lf -> %lf; eval loss %lf, accuracy %lf", &first, &last,
                        &eval_loss, &accuracy),
            4)
      << r.output;
  EXPECT_LT(last, first * 0.5) << r.output;
  EXPECT_GT(accuracy, 0.5) << r.output;
  EXPECT_NE(r.output.find("2 rank(s) on shm, strategy ddp"), std::string::npos) << r.output;
}

TEST(TandemTrain, TrackActivationsShowsThemInTheMemorySummary) {
  const std::string train = kTandem +
                            " train --model gpt-mini --data synthetic-tokens --dataset-size 64 "
                            "--steps 2 --batch-size 4 --optimizer adamw";
  CommandResult plain = run(train);
  ASSERT_EQ(plain.exit_code, 0) << plain.output;
  EXPECT_EQ(plain.output.find("activations"), std::string::npos) << plain.output;
  CommandResult r = run(train + " --track-activations");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto at = r.output.find("; peak ");
  ASSERT_NE(at, std::string::npos) << r.output;
  double model_state = 0, activations = 0, both = 0;
  ASSERT_EQ(std::sscanf(r.output.c_str() + at,
                        "; peak %lf MiB; activations peak %lf MiB, with the model state %lf MiB",
                        &model_state, &activations, &both),
            3)
      << r.output;
  // gpt-mini's 0.88M parameters under AdamW hold 13.4 MiB; 4 sequences of
  // 128 tokens keep about 21 MiB of activations for backward.
  EXPECT_GT(model_state, 12) << r.output;
  EXPECT_GT(activations, 5) << r.output;
  EXPECT_GT(both, model_state + 0.5 * activations) << r.output;
}

TEST(TandemTrain, BadFlagsAreNamed) {
  CommandResult r = run(kTandem + " train --strategy zero9 --steps 1");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--strategy zero9 is not one of none, ddp"), std::string::npos)
      << r.output;
  r = run(kTandem + " train --model resnet18 --data synthetic-mnist --steps 1 --dataset-size 64");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--model resnet18 takes samples of shape [3, 32, 32] but --data "
                          "synthetic-mnist gives [1, 28, 28]"),
            std::string::npos)
      << r.output;
  r = run(kRun + " --nproc-per-node 2 -- " + kTandem + " train --strategy none --steps 1");
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("--strategy none trains one process, but 2 ranks were started"),
            std::string::npos)
      << r.output;
}

}  // namespace

namespace {

TEST(TandemBenchDdp, PrintsOneJsonLineWithBothThroughputs) {
  CommandResult r = run(kTandem +
                        " bench ddp --model mlp --mlp-hidden 64,32 --ranks 2 --steps 5 --warmup 1"
                        " --rounds 2");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto line = r.output.substr(r.output.find("{\"batch_per_rank\""));
  auto j = nlohmann::json::parse(line.substr(0, line.find('\n')));
  EXPECT_EQ(j["ranks"], 2);
  EXPECT_EQ(j["model"], "mlp");
  EXPECT_EQ(j["mlp_hidden"], nlohmann::json::array({64, 32}));
  EXPECT_EQ(j["scaling_efficiency_per_round"].size(), 2u);
  EXPECT_GT(j["samples_per_s_1proc"].get<double>(), 0.0);
  EXPECT_GT(j["samples_per_s_nranks"].get<double>(), 0.0);
  EXPECT_GE(j["exposed_comm_ms_per_step"].get<double>(), 0.0);
  double eff = j["scaling_efficiency"].get<double>();
  EXPECT_NEAR(
      eff, j["samples_per_s_nranks"].get<double>() / (2 * j["samples_per_s_1proc"].get<double>()),
      1e-9);
  CommandResult bad = run(kTandem + " bench ddp --model alexnet");
  EXPECT_EQ(bad.exit_code, 2) << bad.output;
  EXPECT_NE(bad.output.find("unknown model 'alexnet'"), std::string::npos) << bad.output;
  CommandResult zero_width = run(kTandem + " bench ddp --mlp-hidden 64,0");
  EXPECT_EQ(zero_width.exit_code, 2) << zero_width.output;
  EXPECT_NE(zero_width.output.find("--mlp-hidden widths must be positive (got 64,0)"),
            std::string::npos)
      << zero_width.output;
}

}  // namespace

namespace {

TEST(TandemTrain, TraceDirHoldsOneTracePerRankWithBucketAllReduces) {
  auto dir = std::filesystem::temp_directory_path() / ("tandem_trace_" + std::to_string(getpid()));
  CommandResult r =
      run(kRun + " --nproc-per-node 2 -- " + kTandem +
          " train --model mlp --steps 5 --dataset-size 1024 --trace-dir " + dir.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (int rank = 0; rank < 2; ++rank) {
    std::ifstream in(dir / ("rank-" + std::to_string(rank) + ".json"));
    ASSERT_TRUE(in.good()) << "no trace for rank " << rank;
    auto events = nlohmann::json::parse(in)["traceEvents"];
    int forward = 0, buckets = 0;
    for (const auto& e : events) {
      std::string name = e["name"];
      forward += name == "forward";
      buckets += name.rfind("all_reduce bucket", 0) == 0;
      EXPECT_EQ(e["pid"], rank);
      EXPECT_GE(e["dur"].get<double>(), 0.0);
    }
    EXPECT_EQ(forward, 5);
    EXPECT_GE(buckets, 5);
  }
  std::filesystem::remove_all(dir);
}

}  // namespace

namespace {

// A YAML file in a fresh temporary directory, removed with it.
class ConfigFile {
 public:
  explicit ConfigFile(const std::string& text) {
    static int made = 0;
    dir_ = std::filesystem::temp_directory_path() /
           ("tandem_config_" + std::to_string(getpid()) + "_" + std::to_string(made++));
    std::filesystem::create_directories(dir_);
    std::ofstream(path()) << text;
  }
  ~ConfigFile() {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::string path() const { return (dir_ / "run.yaml").string(); }

 private:
  std::filesystem::path dir_;
};

// The file sets lr and batch-size, the command line sets lr: the flag's lr
// and the file's batch size win.
TEST(TandemTrain, ConfigFileWithFlagsOverIt) {
  ConfigFile config(
      "model: mlp\n"
      "dataset-size: 256\n"
      "steps: 3\n"
      "lr: 0.01\n"
      "batch-size: 16\n"
      "nesterov: true\n"
      "optimizer: sgd\n");
  CommandResult r = run(kTandem + " train --config " + config.path() + " --lr 0.25");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("batch 16 per rank, sgd lr 0.25, 3 steps"), std::string::npos)
      << r.output;
  r = run(kTandem + " train --config " + config.path());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("batch 16 per rank, sgd lr 0.01, 3 steps"), std::string::npos)
      << r.output;
}

TEST(TandemTrain, BadConfigExitsTwoNamingFileAndLine) {
  struct Case {
    std::string text;
    std::vector<std::string> words;
  };
  for (const auto& c : std::vector<Case>{
           {"steps: 3\nbatchsize: 8\n", {"line 2", "unknown key 'batchsize'", "'batch-size'"}},
           {"batch-size: abc\n", {"line 1", "key 'batch-size' takes an integer (got 'abc')"}},
           {"lr: 0.1\nmodel: [mlp\n", {"malformed YAML"}},
           {"- mlp\n", {"top level must be a mapping"}},
       }) {
    ConfigFile config(c.text);
    CommandResult r = run(kTandem + " train --config " + config.path());
    EXPECT_EQ(r.exit_code, 2) << c.text << "\n" << r.output;
    EXPECT_NE(r.output.find("tandem: error: config file '" + config.path() + "'"),
              std::string::npos)
        << r.output;
    for (const auto& w : c.words) EXPECT_NE(r.output.find(w), std::string::npos) << r.output;
  }
  CommandResult r = run(kTandem + " train --config /nonexistent/run.yaml");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("config file '/nonexistent/run.yaml' cannot be read"), std::string::npos)
      << r.output;
  // A value the file gives in the right type but out of range is checked
  // like the flag.
  ConfigFile zero("batch-size: 0\n");
  r = run(kTandem + " train --config " + zero.path());
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--batch-size must be at least 1 (got 0)"), std::string::npos)
      << r.output;
}

TEST(TandemTrain, HelpDescribesTheConfigFile) {
  CommandResult r = run(kTandem + " train --help");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  for (const auto& w : std::vector<std::string>{
           "--config", "--batch-size INT=32", "--lr FLOAT=0.05", "--nesterov",
           "flags given on the command line override the file", "  batch-size: 32\n"}) {
    EXPECT_NE(r.output.find(w), std::string::npos) << w << "\n" << r.output;
  }
}

// PowerSGD from step 5 at rank 2: the run learns like the plain one above,
// and each rank's metrics show far fewer bytes once compression starts.
TEST(TandemTrain, PowerSgdCompressionLearnsWithFewerBytes) {
  const std::string prefix =
      (std::filesystem::temp_directory_path() / ("tandem_psgd_" + std::to_string(getpid())))
          .string();
  CommandResult r = run(kRun + " --nproc-per-node 2 -- " + kTandem +
                        " train --model mlp --data synthetic-mnist --dataset-size 2048 --steps 40 "
                        "--batch-size 32 --lr 0.05 --log-every 1 --grad-compression powersgd "
                        "--powersgd-rank 2 --powersgd-start-iter 5 --metrics " +
                        prefix + "_{rank}.jsonl");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("strategy ddp (powersgd rank 2 from step 5)"), std::string::npos)
      << r.output;
  auto at = r.output.find("summary: 40 steps");
  ASSERT_NE(at, std::string::npos) << r.output;
  double first = 0, last = 0, eval_loss = 0, accuracy = 0;
  ASSERT_EQ(std::sscanf(r.output.c_str() + r.output.find("train loss", at),
                        "train loss %lf -> %lf; eval loss %lf, accuracy %lf", &first, &last,
                        &eval_loss, &accuracy),
            4)
      << r.output;
  EXPECT_LT(last, first * 0.5) << r.output;
  EXPECT_GT(accuracy, 0.5) << r.output;
  std::ifstream in(prefix + "_0.jsonl");
  std::vector<int64_t> bytes;
  for (std::string line; std::getline(in, line);) {
    bytes.push_back(nlohmann::json::parse(line)["all_reduce_bytes"].get<int64_t>());
  }
  ASSERT_EQ(bytes.size(), 40u);
  // 269322 float32 parameters; with PowerSGD rank 2: 4158 elements (see
  // tests/parallel/powersgd_test.cpp).
  EXPECT_EQ(bytes[0], 269322 * 4);
  EXPECT_EQ(bytes[4], 269322 * 4);
  EXPECT_EQ(bytes[5], 4158 * 4);
  EXPECT_EQ(bytes[39], 4158 * 4);
  std::filesystem::remove(prefix + "_0.jsonl");
  std::filesystem::remove(prefix + "_1.jsonl");
}

TEST(TandemTrain, BadCompressionFlagsAreNamed) {
  const std::vector<UsageCase> cases = {
      {"--grad-compression zip",
       "--grad-compression zip is not one of none, fp16, bf16, "
       "powersgd"},
      {"--grad-compression fp16 --strategy none",
       "--grad-compression fp16 compresses DDP's "
       "all-reduce; it needs --strategy ddp"},
      {"--grad-compression powersgd --powersgd-rank 0",
       "--powersgd-rank must be at least 1 (got 0)"},
      {"--grad-compression powersgd --powersgd-start-iter -1",
       "--powersgd-start-iter must be >= 0 (got -1)"},
      {"--grad-compression powersgd",
       "--powersgd-start-iter 100 is not below the run's 3 "
       "steps"},
  };
  expect_usage_errors(kTrainMlp, cases);
}

}  // namespace

namespace {

// The commands, shortened to 20 steps: GPT-mini on 4 ranks as
// dp=2 x pp=2 and dp=2 x tp=2 learns (the train loss falls).
TEST(TandemTrain, MeshRunsLearnOnFourRanks) {
  for (const std::string mesh : {"dp=2,pp=2", "dp=2,tp=2"}) {
    CommandResult r = run(kRun + " --nproc-per-node 4 -- " + kTandem +
                          " train --model gpt-mini --data synthetic-tokens --mesh " + mesh +
                          " --steps 20 --batch-size 16 --log-every 10");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("mesh " + mesh), std::string::npos) << r.output;
    const auto at = r.output.find("train loss");
    ASSERT_NE(at, std::string::npos) << r.output;
    double first = 0, last = 0;
    ASSERT_EQ(std::sscanf(r.output.c_str() + at, "train loss %lf -> %lf", &first, &last), 2)
        << r.output;
    EXPECT_LT(last, 0.95 * first) << mesh << "\n" << r.output;
  }
}

TEST(TandemTrain, BadMeshFlagsAreNamed) {
  const std::vector<UsageCase> cases = {
      {"--schedule cosine", "the learning-rate schedule is --lr-schedule"},
      {"--schedule zigzag", "--schedule zigzag is not one of gpipe, 1f1b"},
      {"--mesh dp=2,pp=2", "--mesh dp=2,pp=2 needs 4 ranks"},
      {"--mesh dp=2,ep=2", "'ep=2' is not DIM=N with DIM one of dp, pp, tp"},
      {"--mesh tp=2", "tensor parallelism splits --model gpt-mini, not mlp"},
      {"--mesh dp=1 --micro-batches 0", "--micro-batches must be at least 1"},
  };
  expect_usage_errors(kTrainMlp, cases);
}

}  // namespace
