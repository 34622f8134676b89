// The named alternatives of the trainer's options (`--strategy zero3`,
// `--model gpt-mini`, ...) as enums, each with one table of spellings,
// Choices<E>. Flags and YAML keys parse a value with parse_choice<E>() once,
// at the boundary; help, reports and metrics print it with name_of(); code
// below compares enums, never strings.
//
// Thread-safe: the tables are constants and the functions touch only their
// arguments. Nothing here is collective.
#pragma once

#include <array>
#include <concepts>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "tandem/parallel/pipeline_schedule.h"
#include "tandem/train/data/make_dataset.h"
#include "tandem/train/lr_schedule.h"

namespace tandem::train {

enum class ModelKind { kMlp, kConvNet, kResNet18, kResNet50, kGptMini };
// Parameter dtype. float64 is slower; it is for exact comparisons between
// strategies and world sizes.
enum class Dtype { kFloat32, kFloat64 };
enum class OptimizerKind { kSgd, kAdamW };
enum class StrategyKind { kNone, kDdp, kZero1, kZero2, kZero3, kPs, kEasgd, kGossip, kLocalSgd };
// DDP's all-reduce: as is, as 16-bit floats, or low-rank (PowerSGD).
enum class GradCompression { kNone, kFp16, kBf16, kPowerSgd };
enum class GossipMode { kPush, kPull };
// The pipeline schedules (parallel/pipeline_schedule.h), spelled gpipe, 1f1b.
using PipelineSchedule = parallel::PipelineScheduleKind;
// --resume: off; resume from DIR/latest if there is one, else start at step
// 0 (`--resume`, the default form); or fail when there is none
// (`--resume=require`).
enum class ResumeMode { kOff, kIfPresent, kRequire };
// --elastic-batch: what an elastic run keeps when its world size changes.
enum class ElasticBatch { kGlobal, kPerRank };

// Choices<E>::kFlag is the flag (and YAML key) that takes an E, without
// "--"; kNames lists every value with its spelling, in --help order. A
// specialisation may add `static std::string hint(std::string_view text)`,
// a sentence appended to the error for an unknown spelling.
template <typename E>
struct Choices;

template <>
struct Choices<ModelKind> {
  static constexpr std::string_view kFlag = "model";
  static constexpr std::array<std::pair<ModelKind, std::string_view>, 5> kNames = {{
      {ModelKind::kMlp, "mlp"},
      {ModelKind::kConvNet, "convnet"},
      {ModelKind::kResNet18, "resnet18"},
      {ModelKind::kResNet50, "resnet50"},
      {ModelKind::kGptMini, "gpt-mini"},
  }};
};

template <>
struct Choices<Dtype> {
  static constexpr std::string_view kFlag = "dtype";
  static constexpr std::array<std::pair<Dtype, std::string_view>, 2> kNames = {{
      {Dtype::kFloat32, "float32"},
      {Dtype::kFloat64, "float64"},
  }};
};

template <>
struct Choices<OptimizerKind> {
  static constexpr std::string_view kFlag = "optimizer";
  static constexpr std::array<std::pair<OptimizerKind, std::string_view>, 2> kNames = {{
      {OptimizerKind::kSgd, "sgd"},
      {OptimizerKind::kAdamW, "adamw"},
  }};
};

template <>
struct Choices<LrSchedule> {
  static constexpr std::string_view kFlag = "lr-schedule";
  static constexpr std::array<std::pair<LrSchedule, std::string_view>, 3> kNames = {{
      {LrSchedule::kConstant, "constant"},
      {LrSchedule::kCosine, "cosine"},
      {LrSchedule::kStep, "step"},
  }};
};

template <>
struct Choices<StrategyKind> {
  static constexpr std::string_view kFlag = "strategy";
  static constexpr std::array<std::pair<StrategyKind, std::string_view>, 9> kNames = {{
      {StrategyKind::kNone, "none"},
      {StrategyKind::kDdp, "ddp"},
      {StrategyKind::kZero1, "zero1"},
      {StrategyKind::kZero2, "zero2"},
      {StrategyKind::kZero3, "zero3"},
      {StrategyKind::kPs, "ps"},
      {StrategyKind::kEasgd, "easgd"},
      {StrategyKind::kGossip, "gossip"},
      {StrategyKind::kLocalSgd, "local-sgd"},
  }};
};

template <>
struct Choices<GradCompression> {
  static constexpr std::string_view kFlag = "grad-compression";
  static constexpr std::array<std::pair<GradCompression, std::string_view>, 4> kNames = {{
      {GradCompression::kNone, "none"},
      {GradCompression::kFp16, "fp16"},
      {GradCompression::kBf16, "bf16"},
      {GradCompression::kPowerSgd, "powersgd"},
  }};
};

template <>
struct Choices<GossipMode> {
  static constexpr std::string_view kFlag = "gossip";
  static constexpr std::array<std::pair<GossipMode, std::string_view>, 2> kNames = {{
      {GossipMode::kPush, "push"},
      {GossipMode::kPull, "pull"},
  }};
};

template <>
struct Choices<PipelineSchedule> {
  static constexpr std::string_view kFlag = "schedule";
  static constexpr std::array<std::pair<PipelineSchedule, std::string_view>, 2> kNames = {{
      {PipelineSchedule::kGPipe, "gpipe"},
      {PipelineSchedule::k1F1B, "1f1b"},
  }};
  // `--schedule cosine` is a learning-rate schedule given to the wrong flag.
  static std::string hint(std::string_view text);
};

template <>
struct Choices<DataFormat> {
  static constexpr std::string_view kFlag = "data-format";
  static constexpr std::array<std::pair<DataFormat, std::string_view>, 4> kNames = {{
      {DataFormat::kAuto, "auto"},
      {DataFormat::kMnist, "mnist"},
      {DataFormat::kCifar, "cifar"},
      {DataFormat::kTokens, "tokens"},
  }};
};

// `--resume` alone reads "true" (CLI11 and YAML alike), `--resume=false` and
// a missing key "false".
template <>
struct Choices<ResumeMode> {
  static constexpr std::string_view kFlag = "resume";
  static constexpr std::array<std::pair<ResumeMode, std::string_view>, 3> kNames = {{
      {ResumeMode::kOff, "false"},
      {ResumeMode::kIfPresent, "true"},
      {ResumeMode::kRequire, "require"},
  }};
};

template <>
struct Choices<ElasticBatch> {
  static constexpr std::string_view kFlag = "elastic-batch";
  static constexpr std::array<std::pair<ElasticBatch, std::string_view>, 2> kNames = {{
      {ElasticBatch::kGlobal, "global"},
      {ElasticBatch::kPerRank, "per-rank"},
  }};
};

namespace detail {
// "--FLAG TEXT is not one of A, B, C[; HINT]" as an InvalidArgument.
[[noreturn]] void throw_unknown_choice(std::string_view flag, std::string_view text,
                                       const std::string& names, const std::string& hint);
// An enum value outside its table: a Tandem bug (InternalError).
[[noreturn]] void throw_unnamed_choice(std::string_view flag, int value);
}  // namespace detail

// The spellings of E joined by `separator`: "none, ddp, zero1, ...".
template <typename E>
std::string choice_names(std::string_view separator = ", ") {
  std::string out;
  for (const auto& [value, name] : Choices<E>::kNames) {
    if (!out.empty()) out += separator;
    out += name;
  }
  return out;
}

// The value spelled `text`, or nullopt.
template <typename E>
std::optional<E> find_choice(std::string_view text) {
  for (const auto& [value, name] : Choices<E>::kNames) {
    if (name == text) return value;
  }
  return std::nullopt;
}

// The value spelled `text`. Throws InvalidArgument naming the flag, the text
// and every spelling: "--strategy zero9 is not one of none, ddp, ...".
template <typename E>
E parse_choice(std::string_view text) {
  if (auto value = find_choice<E>(text)) return *value;
  std::string hint;
  if constexpr (requires {
                  { Choices<E>::hint(text) } -> std::convertible_to<std::string>;
                }) {
    hint = Choices<E>::hint(text);
  }
  detail::throw_unknown_choice(Choices<E>::kFlag, text, choice_names<E>(), hint);
}

// The spelling of `value`, as the flag takes it ("zero3").
template <typename E>
std::string_view name_of(E value) {
  for (const auto& [v, name] : Choices<E>::kNames) {
    if (v == value) return name;
  }
  detail::throw_unnamed_choice(Choices<E>::kFlag, static_cast<int>(value));
}

}  // namespace tandem::train
