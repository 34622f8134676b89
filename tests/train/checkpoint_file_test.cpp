// The checkpoint file format, pinned by construction: a file built byte by
// byte from the layout in checkpoint_file.h is what write_checkpoint_file
// writes and what read_checkpoint reads, so a change of format (or of the
// code that writes it) cannot pass unnoticed; a version-1 file still loads.
// DIR/latest: absent means no checkpoint yet, present names the newest.
#include "tandem/train/checkpoint_file.h"

#include <ATen/ops/equal.h>
#include <ATen/ops/tensor.h>
#include <fmt/format.h>
#include <gtest/gtest.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "tandem/core/error.h"
#include "tests/train/data/temp_dir.h"

namespace tandem::train {
namespace {

using testing::expect_error;
using testing::TempDir;

template <typename T>
void append(std::vector<char>& out, T value) {
  char bytes[sizeof(T)];
  std::memcpy(bytes, &value, sizeof(T));  // little-endian, as the format
  out.insert(out.end(), bytes, bytes + sizeof(T));
}

// The payload of the checkpoint below: parameter w = [1.5, -2] (float32),
// then the optimizer blob "abc".
std::vector<char> payload() {
  std::vector<char> p;
  append<float>(p, 1.5f);
  append<float>(p, -2.0f);
  p.insert(p.end(), {'a', 'b', 'c'});
  return p;
}

// A whole file in format `version`, as checkpoint_file.h lays it out.
std::vector<char> file_bytes(uint32_t version) {
  const std::vector<char> body = payload();
  const std::string checksum = fmt::format("{:016x}", XXH3_64bits(body.data(), body.size()));
  // The header's keys in order, as the JSON writer sorts them.
  const std::string header =
      R"({"epoch":1,"meta":{"model":"m"},"payload_checksum":")" + checksum +
      R"(","payload_size":11,"samples_in_epoch":5,"sections":[)"
      R"({"dtype":"Float","name":"w","nbytes":8,"offset":0,"section":"parameter","shape":[2]},)"
      R"({"dtype":"bytes","name":"state","nbytes":3,"offset":8,"section":"optimizer","shape":[]}],)"
      R"("seed":9,)" +
      std::string(version >= 2 ? R"("sharding":null,)" : "") + R"("step":3,"world_size":2})";
  std::vector<char> out = {'T', 'N', 'D', 'M', 'C', 'K', 'P', 'T'};
  append<uint32_t>(out, version);
  append<uint32_t>(out, 2);  // world size
  append<uint64_t>(out, header.size());
  append<uint64_t>(out, XXH3_64bits(header.data(), header.size()));
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), body.begin(), body.end());
  return out;
}

Checkpoint the_checkpoint() {
  Checkpoint ck;
  ck.step = 3;
  ck.epoch = 1;
  ck.samples_in_epoch = 5;
  ck.seed = 9;
  ck.world_size = 2;
  ck.meta = {{"model", "m"}};
  ck.parameters.emplace_back("w", at::tensor(std::vector<float>{1.5f, -2.0f}));
  ck.optimizer_state = "abc";
  return ck;
}

void expect_the_checkpoint(const Checkpoint& ck) {
  EXPECT_EQ(ck.step, 3);
  EXPECT_EQ(ck.epoch, 1);
  EXPECT_EQ(ck.samples_in_epoch, 5);
  EXPECT_EQ(ck.seed, 9u);
  EXPECT_EQ(ck.world_size, 2);
  EXPECT_EQ(ck.meta, (std::map<std::string, std::string>{{"model", "m"}}));
  ASSERT_EQ(ck.parameters.size(), 1u);
  EXPECT_EQ(ck.parameters[0].first, "w");
  EXPECT_TRUE(at::equal(ck.parameters[0].second, at::tensor(std::vector<float>{1.5f, -2.0f})));
  EXPECT_EQ(ck.optimizer_state, "abc");
  EXPECT_TRUE(ck.buffers.empty());
  EXPECT_FALSE(ck.rng_state.defined());
  EXPECT_TRUE(ck.sharding.empty());
}

TEST(CheckpointFile, WritesTheDocumentedLayoutByteForByte) {
  TempDir dir;
  const std::string path = dir.file("step-3.ckpt");
  write_checkpoint_file(path, the_checkpoint());
  EXPECT_EQ(testing::read_all(path), file_bytes(kCheckpointFormatVersion));
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
}

TEST(CheckpointFile, ReadsFilesBuiltFromTheLayoutVersionsOneAndTwo) {
  TempDir dir;
  for (uint32_t version : {1u, 2u}) {
    const std::string path = dir.file(fmt::format("v{}.ckpt", version));
    testing::write_all(path, file_bytes(version));
    const Checkpoint ck = read_checkpoint(path);
    EXPECT_EQ(ck.path, path);
    expect_the_checkpoint(ck);
  }
}

TEST(CheckpointFile, LatestIsAbsentUntilACheckpointIsComplete) {
  TempDir dir;
  EXPECT_FALSE(find_latest_checkpoint(dir.file("never-made")).has_value());
  EXPECT_FALSE(find_latest_checkpoint(dir.path().string()).has_value());
  expect_error<CheckpointError>([&] { latest_checkpoint(dir.path().string()); },
                                {"latest", "no checkpoint to resume from"});
  const std::string path = write_checkpoint(dir.path().string(), the_checkpoint());
  EXPECT_EQ(find_latest_checkpoint(dir.path().string()), path);
  EXPECT_EQ(latest_checkpoint(dir.path().string()), path);
  expect_the_checkpoint(load_latest(dir.path().string()));
  testing::write_all(dir.file("latest"), {'.', '.', '/', 'x', '\n'});
  expect_error<CheckpointError>([&] { find_latest_checkpoint(dir.path().string()); },
                                {"latest", "'../x' is not a checkpoint name"});
}

TEST(CheckpointFile, EveryFailureNamesTheFileAndTheField) {
  expect_error<CheckpointError>([] { throw_checkpoint_error("/d/step-1.ckpt", "seed", "differs"); },
                                {"checkpoint '/d/step-1.ckpt': field 'seed': differs"});
}

}  // namespace
}  // namespace tandem::train
