// The YAML config of `tandem train`: every key of the table loads into its
// field, flags override the file, and each kind of bad input is an
// InvalidArgument naming the file, the line and what is wrong.
#include "tandem/train/config.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "tandem/core/error.h"
#include "tests/train/data/temp_dir.h"

namespace tandem::train {
namespace {

using testing::expect_error;
using testing::TempDir;

std::string write_file(const TempDir& dir, const std::string& name, const std::string& text) {
  const std::string path = dir.file(name);
  std::ofstream(path) << text;
  return path;
}

TEST(TrainConfig, LoadsEveryKindOfValue) {
  TempDir dir;
  const std::string path = write_file(dir, "run.yaml",
                                      "# a comment\n"
                                      "model: resnet18\n"
                                      "data: synthetic-cifar\n"
                                      "batch-size: 16\n"
                                      "lr: 0.1\n"
                                      "weight-decay: 5e-4\n"
                                      "nesterov: true\n"
                                      "seed: 18446744073709551615\n"
                                      "threads: 3\n"
                                      "backend: gloo\n"
                                      "checkpoint-dir: \"ckpt dir\"\n");
  TrainConfig c = load_train_config(path);
  EXPECT_EQ(c.trainer.model, "resnet18");
  EXPECT_EQ(c.trainer.data, "synthetic-cifar");
  EXPECT_EQ(c.trainer.batch_size, 16);
  EXPECT_EQ(c.trainer.lr, 0.1);
  EXPECT_EQ(c.trainer.weight_decay, 5e-4);
  EXPECT_TRUE(c.trainer.nesterov);
  EXPECT_EQ(c.trainer.seed, 18446744073709551615ull);
  EXPECT_EQ(c.threads, 3);
  EXPECT_EQ(c.backend, "gloo");
  EXPECT_EQ(c.trainer.checkpoint_dir, "ckpt dir");
  // Keys the file does not name keep their defaults.
  const TrainerOptions defaults;
  EXPECT_EQ(c.trainer.momentum, defaults.momentum);
  EXPECT_EQ(c.trainer.strategy, defaults.strategy);
}

// Every key of the table reaches its own field: setting key k to a value
// unlike its default changes exactly one field of the whole config.
TEST(TrainConfig, EveryKeyHasItsOwnField) {
  std::set<std::string> names;
  const TrainConfig defaults;
  for (const auto& key : train_config_keys()) {
    EXPECT_TRUE(names.insert(std::string(key.name)).second) << key.name << " appears twice";
    EXPECT_FALSE(key.help.empty()) << key.name;
    std::string value = std::visit(
        [](auto field) -> std::string {
          using V = std::remove_reference_t<decltype(field(std::declval<TrainConfig&>()))>;
          if constexpr (std::is_same_v<V, bool>) return "true";
          if constexpr (std::is_same_v<V, std::string>) return "changed";
          if constexpr (std::is_same_v<V, double>) return "7.25";
          return "77";
        },
        key.field);
    TrainConfig c = parse_train_config(std::string(key.name) + ": " + value + "\n", "k.yaml");
    int changed = 0;
    for (const auto& other : train_config_keys()) {
      std::visit(
          [&](auto field) {
            TrainConfig a = c, b = defaults;
            changed += field(a) != field(b);
          },
          other.field);
    }
    EXPECT_EQ(changed, 1) << key.name;
  }
  EXPECT_TRUE(names.count("batch-size") && names.count("checkpoint-dir") && names.count("lr"));
}

TEST(TrainConfig, FlagsOverrideTheFile) {
  TempDir dir;
  const std::string path = write_file(dir, "run.yaml", "lr: 0.1\nbatch-size: 64\n");
  TrainConfig flags;  // as the command line parsed it: --lr 0.3
  flags.trainer.lr = 0.3;
  TrainConfig c = load_train_config(path);
  override_keys(c, flags, std::vector<std::string>{"lr"});
  EXPECT_EQ(c.trainer.lr, 0.3);
  EXPECT_EQ(c.trainer.batch_size, 64);
  expect_error<InvalidArgument>(
      [&] { override_keys(c, flags, std::vector<std::string>{"learning-rate"}); },
      {"unknown key 'learning-rate'"});
}

TEST(TrainConfig, EmptyFileSetsNothing) {
  TempDir dir;
  TrainConfig base;
  base.trainer.lr = 0.5;
  EXPECT_EQ(load_train_config(write_file(dir, "empty.yaml", ""), base).trainer.lr, 0.5);
  EXPECT_EQ(load_train_config(write_file(dir, "comments.yaml", "# nothing\n"), base).trainer.lr,
            0.5);
}

TEST(TrainConfig, UnknownKeyNamesTheLineAndTheNearestKey) {
  TempDir dir;
  const std::string path = write_file(dir, "run.yaml", "lr: 0.1\n\nbatch_size: 32\n");
  expect_error<InvalidArgument>([&] { load_train_config(path); },
                                {"config file '" + path + "', line 3", "unknown key 'batch_size'",
                                 "did you mean 'batch-size'?"});
  expect_error<InvalidArgument>([&] { parse_train_config("chekpoint-dir: x\n", "a.yaml"); },
                                {"line 1", "did you mean 'checkpoint-dir'?"});
  EXPECT_EQ(nearest_config_key("batchsize"), "batch-size");
  // No suggestion for a name that is no typo of any key.
  try {
    parse_train_config("foo: 1\n", "f.yaml");
    ADD_FAILURE() << "an unknown key was accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("unknown key 'foo'; the keys are"), std::string::npos)
        << e.what();
  }
  EXPECT_EQ(nearest_config_key("nesterov"), "nesterov");
}

TEST(TrainConfig, WrongTypesNameTheKeyTheTypeAndTheValue) {
  struct Case {
    std::string text;
    std::vector<std::string> words;
  };
  for (const auto& c : std::vector<Case>{
           {"model: mlp\nbatch-size: abc\n",
            {"line 2", "key 'batch-size' takes an integer", "'abc'"}},
           {"batch-size: 1.5\n", {"line 1", "key 'batch-size' takes an integer", "'1.5'"}},
           {"lr: fast\n", {"key 'lr' takes a number (got 'fast')"}},
           {"nesterov: 1\n", {"key 'nesterov' takes true or false (got '1')"}},
           {"seed: -3\n", {"key 'seed' takes a non-negative integer (got '-3')"}},
           {"threads: 99999999999\n", {"key 'threads' takes an integer"}},
           {"model: [mlp, convnet]\n", {"key 'model' takes a string, not a sequence"}},
           {"lr:\n", {"key 'lr' takes a number, not an empty value"}},
           {"data:\n  path: x\n", {"key 'data' takes a string, not a mapping"}},
       }) {
    expect_error<InvalidArgument>([&] { parse_train_config(c.text, "t.yaml"); }, c.words);
  }
}

TEST(TrainConfig, MalformedYamlAndOtherShapes) {
  expect_error<InvalidArgument>(
      [&] { parse_train_config("lr: 0.1\nmodel: [mlp\n", "m.yaml"); },
      {"config file 'm.yaml', line 2", "malformed YAML at the end of the file",
       "end of sequence flow not found"});
  expect_error<InvalidArgument>(
      [&] { parse_train_config("lr: 0.1\nmodel: mlp\n  steps: 3\n", "i.yaml"); },
      {"config file 'i.yaml', line 3", "malformed YAML at column"});
  expect_error<InvalidArgument>([&] { parse_train_config("- lr\n- 0.1\n", "s.yaml"); },
                                {"'s.yaml', line 1", "top level must be a mapping", "a sequence"});
  expect_error<InvalidArgument>([&] { parse_train_config("resnet18\n", "p.yaml"); },
                                {"top level must be a mapping", "the scalar 'resnet18'"});
  expect_error<InvalidArgument>([&] { parse_train_config("lr: 0.1\n---\nlr: 0.2\n", "d.yaml"); },
                                {"holds 2 YAML documents"});
  expect_error<InvalidArgument>(
      [&] { parse_train_config("lr: 0.1\nsteps: 3\nlr: 0.2\n", "r.yaml"); },
      {"line 3", "key 'lr' is given twice (first on line 1)"});
  expect_error<InvalidArgument>([&] { parse_train_config("[lr]: 0.1\n", "k.yaml"); },
                                {"a key must be a name"});
}

TEST(TrainConfig, MissingFileOrDirectoryIsNamed) {
  TempDir dir;
  const std::string missing = dir.file("nope.yaml");
  expect_error<InvalidArgument>(
      [&] { load_train_config(missing); },
      {"config file '" + missing + "' cannot be read", "No such file or directory"});
  expect_error<InvalidArgument>([&] { load_train_config(dir.path().string()); },
                                {"is a directory"});
}

}  // namespace
}  // namespace tandem::train
