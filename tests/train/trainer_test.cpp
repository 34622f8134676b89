// The training loop's outputs as a user watches them: --metrics lines reach
// the file one by one while the run is going (not at exit), and a token
// file whose name hides its format trains once --data-format names it.
#include "tandem/train/trainer.h"

#include <ATen/ops/arange.h>
#include <ATen/ops/randint.h>
#include <ATen/ops/zeros.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>

#include "tandem/comm/rendezvous.h"
#include "tandem/core/error.h"
#include "tandem/train/data/fixture_writer.h"
#include "tandem/train/data/synthetic_dataset.h"
#include "tests/train/data/temp_dir.h"

namespace tandem::train {
namespace {

using testing::expect_error;
using testing::TempDir;

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// The run logs every step and lasts far longer than three steps; a reader
// beside it waits (bounded) until the file holds three lines while the run
// has not returned. Whatever it read then is whole lines of JSON in step
// order: each line was flushed as it was written. Buffered until exit, the
// reader would see nothing until the end, or a buffer's worth cut mid-line.
TEST(Trainer, MetricsLinesReachTheFileWhileTheRunIsGoing) {
  TempDir dir;
  const std::string file = dir.file("metrics.jsonl");
  TrainerOptions o;
  o.data.synthetic_size = 256;
  o.run.steps = 200;
  o.run.batch_size = 8;
  o.observe.log_every = 1;
  o.observe.eval_batches = 1;
  o.observe.metrics_file = file;
  auto comm = tandem::init(RendezvousInfo{}, {});
  std::atomic<bool> done{false};
  std::thread run([&] {
    train(o, comm, nullptr);
    done = true;
  });
  std::string seen;
  bool while_running = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  auto wait = std::chrono::milliseconds(1);
  while (std::chrono::steady_clock::now() < deadline) {
    const bool running = !done;
    seen = read_text(file);
    if (std::count(seen.begin(), seen.end(), '\n') >= 3 || !running) {
      while_running = running;
      break;
    }
    std::this_thread::sleep_for(wait);
    wait = std::min(wait * 2, std::chrono::milliseconds(50));
  }
  run.join();
  ASSERT_TRUE(while_running) << "the metrics reached the file only when the run ended";
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen.back(), '\n') << "a line was cut: the file got a buffer, not lines\n" << seen;
  std::istringstream lines(seen);
  int64_t step = 0;
  for (std::string line; std::getline(lines, line);) {
    EXPECT_EQ(nlohmann::json::parse(line)["step"].get<int64_t>(), ++step) << line;
  }
  EXPECT_GE(step, 3);
  // The run wrote all its lines by the end (one per step).
  const std::string all = read_text(file);
  EXPECT_EQ(std::count(all.begin(), all.end(), '\n'), 200);
}

// A token file named corpus.dat: auto-detection cannot tell its format (and
// says --data-format is how to give it); --data-format tokens trains on it.
TEST(Trainer, DataFormatNamesTheFormatOfAPath) {
  TempDir dir;
  const std::string corpus = dir.file("corpus.dat");
  at::manual_seed(2);
  write_token_file(corpus, at::randint(0, 256, {600}, at::kLong));
  TrainerOptions o;
  o.model.kind = ModelKind::kGptMini;
  o.data.source = corpus;
  o.run.steps = 1;
  o.run.batch_size = 2;
  o.observe.eval_batches = 1;
  auto comm = tandem::init(RendezvousInfo{}, {});
  expect_error<InvalidArgument>([&] { train(o, comm, nullptr); },
                                {corpus, "cannot detect the format", "--data-format"});
  o.data.format = DataFormat::kTokens;
  std::ostringstream out;
  EXPECT_EQ(train(o, comm, &out).steps, 1);
  EXPECT_NE(out.str().find("token file '" + corpus + "'"), std::string::npos) << out.str();
}

// A test split that exists but is damaged is an error naming its file, not a
// silent evaluation on the training split.
TEST(Trainer, ADamagedTestSplitIsReportedNotReplaced) {
  TempDir dir;
  SyntheticOptions s;
  s.size = 64;
  write_mnist_dir(dir.path().string(), SyntheticDataset(s), 64);
  at::Tensor labels = at::arange(8, at::kLong).remainder(10);
  labels[5] = 11;
  write_mnist_idx(dir.file("t10k-images-idx3-ubyte"), dir.file("t10k-labels-idx1-ubyte"),
                  at::zeros({8, 28, 28}, at::kByte), labels);
  TrainerOptions o;
  o.data.source = dir.path().string();
  o.run.steps = 1;
  o.run.batch_size = 8;
  o.observe.eval_batches = 1;
  auto comm = tandem::init(RendezvousInfo{}, {});
  expect_error<Error>([&] { train(o, comm, nullptr); },
                      {dir.file("t10k-labels-idx1-ubyte"), "label 5 is 11"});
}

}  // namespace
}  // namespace tandem::train
