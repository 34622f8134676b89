// The YAML config of `tandem train`: every key of the table loads into its
// typed field (text keys parsed once: enums, the mesh, stragglers, the
// timeouts), flags override the file, and each kind of bad input is an
// InvalidArgument naming the file, the line and what is wrong.
#include "tandem/train/config.h"

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
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
  EXPECT_EQ(c.trainer.model.kind, ModelKind::kResNet18);
  EXPECT_EQ(c.trainer.data.source, "synthetic-cifar");
  EXPECT_EQ(c.trainer.run.batch_size, 16);
  EXPECT_EQ(c.trainer.optimizer.lr, 0.1);
  EXPECT_EQ(c.trainer.optimizer.weight_decay, 5e-4);
  EXPECT_TRUE(c.trainer.optimizer.nesterov);
  EXPECT_EQ(c.trainer.run.seed, 18446744073709551615ull);
  EXPECT_EQ(c.threads, 3);
  EXPECT_EQ(c.backend, "gloo");
  EXPECT_EQ(c.trainer.checkpoint.dir, "ckpt dir");
  // Keys the file does not name keep their defaults.
  const TrainerOptions defaults;
  EXPECT_EQ(c.trainer.optimizer.momentum, defaults.optimizer.momentum);
  EXPECT_EQ(c.trainer.strategy.kind, defaults.strategy.kind);
}

// A value unlike the key's default, as the key's text: a spelling other than
// the default's for an enum, an example for other text keys.
std::string other_value(const ConfigKey& key) {
  const TrainConfig defaults;
  return std::visit(
      [&](auto field) -> std::string {
        if constexpr (std::is_same_v<decltype(field), TextField>) {
          std::stringstream names(field.choices());
          for (std::string name; std::getline(names, name, '|');) {
            if (name != field.get(defaults)) return name;
          }
          if (key.name == "mesh") return "dp=2";
          if (key.name == "wrap-policy") return "size:100";
          if (key.name == "inject-delay") return "ranks=1,ms=5";
          if (key.name == "inject-slowdown") return "ranks=1,factor=2";
          return "7.25";  // the timeouts, in seconds
        } else {
          using V = std::remove_reference_t<decltype(field(std::declval<TrainConfig&>()))>;
          if constexpr (std::is_same_v<V, bool>) return "true";
          if constexpr (std::is_same_v<V, std::string>) return "changed";
          if constexpr (std::is_same_v<V, double>) return "7.25";
          return "77";
        }
      },
      key.field);
}

// True when the key's field holds the same value in both configs.
bool same_value(const ConfigKey& key, const TrainConfig& a, const TrainConfig& b) {
  return std::visit(
      [&](auto field) {
        if constexpr (std::is_same_v<decltype(field), TextField>) {
          return field.get(a) == field.get(b);
        } else {
          TrainConfig x = a, y = b;
          return field(x) == field(y);
        }
      },
      key.field);
}

// Every key of the table reaches its own field: setting key k to a value
// unlike its default changes exactly one field of the whole config.
TEST(TrainConfig, EveryKeyHasItsOwnField) {
  std::set<std::string> names;
  const TrainConfig defaults;
  for (const auto& key : train_config_keys()) {
    EXPECT_TRUE(names.insert(std::string(key.name)).second) << key.name << " appears twice";
    EXPECT_FALSE(key.help.empty()) << key.name;
    const std::string value = other_value(key);
    TrainConfig c = parse_train_config(std::string(key.name) + ": " + value + "\n", "k.yaml");
    int changed = 0;
    for (const auto& other : train_config_keys()) changed += !same_value(other, c, defaults);
    EXPECT_EQ(changed, 1) << key.name << ": " << value;
  }
  EXPECT_TRUE(names.count("batch-size") && names.count("checkpoint-dir") && names.count("lr"));
}

// The help of a key that takes one of several names lists exactly the names
// it parses, so --help cannot drift from the parser.
TEST(TrainConfig, ChoiceKeysListTheirSpellingsInTheHelp) {
  int checked = 0;
  for (const auto& key : train_config_keys()) {
    const auto* text = std::get_if<TextField>(&key.field);
    if (text == nullptr || text->choices().empty() || text->flag) continue;
    EXPECT_NE(key.help.find(text->choices()), std::string_view::npos)
        << key.name << ": '" << key.help << "' does not list " << text->choices();
    ++checked;
  }
  EXPECT_GE(checked, 9);  // model, data-format, optimizer, lr-schedule, dtype, strategy, ...
}

// Text keys parse once into their typed fields, the same way from YAML and
// through override_keys (the flags).
TEST(TrainConfig, TextKeysParseIntoTypedFields) {
  TrainConfig c = parse_train_config(
      "strategy: zero3\n"
      "mesh: pp=2,dp=2\n"
      "schedule: gpipe\n"
      "grad-compression: bf16\n"
      "gossip: pull\n"
      "lr-schedule: cosine\n"
      "dtype: float64\n"
      "data-format: tokens\n"
      "wrap-policy: type:GptBlockImpl\n"
      "inject-delay: ranks=1:2,ms=200,prob=0.5\n"
      "inject-slowdown: ranks=3,factor=2.5\n"
      "resume: require\n"
      "comm-timeout: 2.5\n"
      "rendezvous-timeout: 30\n",
      "t.yaml");
  const TrainerOptions& o = c.trainer;
  EXPECT_EQ(o.strategy.kind, StrategyKind::kZero3);
  ASSERT_TRUE(o.mesh.shape.has_value());
  EXPECT_EQ(o.mesh.shape->dp, 2);
  EXPECT_EQ(o.mesh.shape->pp, 2);
  EXPECT_EQ(o.mesh.shape->tp, 1);
  EXPECT_EQ(o.mesh.schedule, PipelineSchedule::kGPipe);
  EXPECT_EQ(o.strategy.ddp.compression, GradCompression::kBf16);
  EXPECT_EQ(o.strategy.async.gossip, GossipMode::kPull);
  EXPECT_EQ(o.optimizer.schedule, LrSchedule::kCosine);
  EXPECT_EQ(o.model.dtype, Dtype::kFloat64);
  EXPECT_EQ(o.data.format, DataFormat::kTokens);
  EXPECT_FALSE(o.strategy.zero.wrap.automatic);
  EXPECT_EQ(o.strategy.zero.wrap.module_types, std::vector<std::string>{"GptBlockImpl"});
  EXPECT_EQ(o.straggler.delay.ranks, (std::vector<int>{1, 2}));
  EXPECT_EQ(o.straggler.delay.delay, std::chrono::milliseconds(200));
  EXPECT_EQ(o.straggler.slowdown.factor, 2.5);
  EXPECT_EQ(o.checkpoint.resume, ResumeMode::kRequire);
  EXPECT_EQ(c.comm_timeout, Millis(2500));
  EXPECT_EQ(c.rendezvous_timeout, Millis(30'000));
  EXPECT_EQ(parse_train_config("resume: true\n", "r.yaml").trainer.checkpoint.resume,
            ResumeMode::kIfPresent);
  EXPECT_EQ(parse_train_config("resume: false\n", "r.yaml").trainer.checkpoint.resume,
            ResumeMode::kOff);
  // The defaults: no mesh, no timeouts of our own (InitOptions' apply).
  const TrainConfig defaults;
  EXPECT_FALSE(defaults.trainer.mesh.shape.has_value());
  EXPECT_FALSE(defaults.comm_timeout.has_value());
  EXPECT_EQ(defaults.trainer.checkpoint.resume, ResumeMode::kOff);

  TrainConfig into;
  override_keys(into, c,
                std::vector<std::string>{"strategy", "mesh", "comm-timeout", "inject-delay"});
  EXPECT_EQ(into.trainer.strategy.kind, StrategyKind::kZero3);
  EXPECT_EQ(into.trainer.mesh.shape->describe(), "dp=2,pp=2");
  EXPECT_EQ(into.comm_timeout, Millis(2500));
  EXPECT_EQ(into.trainer.straggler.delay.probability, 0.5);
  EXPECT_EQ(into.trainer.model.dtype, Dtype::kFloat32);  // not named: untouched
}

TEST(TrainConfig, BadTextValuesNameTheLineTheKeyAndTheFlag) {
  struct Case {
    std::string text;
    std::vector<std::string> words;
  };
  for (const auto& c : std::vector<Case>{
           {"steps: 3\nstrategy: zero9\n",
            {"line 2", "key 'strategy'", "--strategy zero9 is not one of none, ddp"}},
           {"model: alexnet\n", {"--model alexnet is not one of mlp, convnet"}},
           {"schedule: cosine\n", {"names a learning-rate schedule", "--lr-schedule"}},
           {"mesh: dp=0\n", {"--mesh dp=0: dp=0 is not a positive integer"}},
           {"resume: yes\n", {"--resume yes is not one of false, true, require"}},
           {"data-format: imagenet\n", {"--data-format imagenet is not one of auto, mnist"}},
           {"wrap-policy: block\n", {"--wrap-policy", "'block'"}},
           {"comm-timeout: 0\n", {"--comm-timeout takes a positive number of seconds", "'0'"}},
           {"comm-timeout: -5\n", {"--comm-timeout", "'-5'"}},
           {"comm-timeout: 2x\n", {"--comm-timeout", "'2x'"}},
           {"rendezvous-timeout: inf\n", {"--rendezvous-timeout", "'inf'"}},
           {"strategy: [ddp]\n", {"key 'strategy' takes a string, not a sequence"}},
       }) {
    expect_error<InvalidArgument>([&] { parse_train_config(c.text, "t.yaml"); }, c.words);
  }
}

TEST(TrainConfig, FlagsOverrideTheFile) {
  TempDir dir;
  const std::string path = write_file(dir, "run.yaml", "lr: 0.1\nbatch-size: 64\n");
  TrainConfig flags;  // as the command line parsed it: --lr 0.3
  flags.trainer.optimizer.lr = 0.3;
  TrainConfig c = load_train_config(path);
  override_keys(c, flags, std::vector<std::string>{"lr"});
  EXPECT_EQ(c.trainer.optimizer.lr, 0.3);
  EXPECT_EQ(c.trainer.run.batch_size, 64);
  expect_error<InvalidArgument>(
      [&] { override_keys(c, flags, std::vector<std::string>{"learning-rate"}); },
      {"unknown key 'learning-rate'"});
}

TEST(TrainConfig, EmptyFileSetsNothing) {
  TempDir dir;
  TrainConfig base;
  base.trainer.optimizer.lr = 0.5;
  EXPECT_EQ(load_train_config(write_file(dir, "empty.yaml", ""), base).trainer.optimizer.lr, 0.5);
  EXPECT_EQ(
      load_train_config(write_file(dir, "comments.yaml", "# nothing\n"), base).trainer.optimizer.lr,
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
