#include "tandem/train/config.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <type_traits>
#include <vector>

#include "tandem/core/error.h"

namespace tandem::train {
namespace {

// Accessors the table points at: a field of the TrainConfig, reached
// through a path of members (&TrainConfig::trainer, &TrainerOptions::run,
// &RunConfig::steps).
template <auto... Path>
auto& at(TrainConfig& c) {
  return (c.*....*Path);
}
template <auto... Path>
const auto& at_const(const TrainConfig& c) {
  return (c.*....*Path);
}

// A TextField that reads text with Parse and writes it with Format.
template <auto Parse, auto Format, auto... Path>
TextField text_field(std::string_view type_name = "TEXT", bool flag = false) {
  return {[](TrainConfig& c, const std::string& text) { at<Path...>(c) = Parse(text); },
          [](const TrainConfig& c) { return std::string(Format(at_const<Path...>(c))); },
          [](TrainConfig& into, const TrainConfig& from) {
            at<Path...>(into) = at_const<Path...>(from);
          },
          [] { return std::string(); },
          type_name,
          flag};
}

// A TextField of an enum, by its spellings (choices.h).
template <auto... Path>
TextField choice_field(bool flag = false) {
  using E = std::remove_cvref_t<decltype(at<Path...>(std::declval<TrainConfig&>()))>;
  TextField f = text_field<&parse_choice<E>, &name_of<E>, Path...>("TEXT", flag);
  f.choices = [] { return choice_names<E>("|"); };
  return f;
}

// --mesh: "" is no mesh.
std::optional<MeshShape> mesh_of(const std::string& text) {
  if (text.empty()) return std::nullopt;
  return parse_mesh(text);
}
std::string mesh_text(const std::optional<MeshShape>& shape) {
  return shape ? shape->describe() : "";
}
std::string wrap_text(const WrapPolicy& w) { return describe(w); }
std::string delay_text(const InjectDelay& d) { return describe(d); }
std::string slowdown_text(const InjectSlowdown& s) { return describe(s); }

// A positive number of seconds, the whole text (no trailing junk), at most
// about 30 years so that the milliseconds fit.
Millis seconds_of(std::string_view flag, const std::string& text) {
  double seconds = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, seconds);
  const bool number = !text.empty() && ec == std::errc() && ptr == end && std::isfinite(seconds);
  if (!number || seconds < 0.001 || seconds > 1e9) {
    throw InvalidArgument(fmt::format(
        "--{} takes a positive number of seconds, from 0.001 to 1e9 (got '{}')", flag, text));
  }
  return Millis(std::llround(seconds * 1000.0));
}
std::optional<Millis> comm_timeout_of(const std::string& text) {
  return seconds_of("comm-timeout", text);
}
std::optional<Millis> rendezvous_timeout_of(const std::string& text) {
  return seconds_of("rendezvous-timeout", text);
}
std::string seconds_text(const std::optional<Millis>& t) {
  return t ? fmt::format("{}", static_cast<double>(t->count()) / 1000.0) : "";
}

// In --help order. An option of TrainerOptions that users should set is one
// line here and becomes both a flag and a config key; eval_batches and
// stop_at_step are for tests and stay out.
constexpr auto kT = &TrainConfig::trainer;
using T = TrainerOptions;
using Run = RunConfig;
using Opt = OptimizerConfig;
using Str = StrategyConfig;
using Async = AsyncConfig;
using Obs = ObservabilityConfig;
using Ckpt = CheckpointConfig;
const ConfigKey kKeys[] = {
    {"model", "mlp|convnet|resnet18|resnet50|gpt-mini",
     choice_field<kT, &T::model, &ModelConfig::kind>()},
    {"data", "a path, or synthetic-mnist|synthetic-cifar|synthetic-tokens",
     &at<kT, &T::data, &DataConfig::source>},
    {"data-format", "auto|mnist|cifar|tokens: how to read a --data path (auto: detect it)",
     choice_field<kT, &T::data, &DataConfig::format>()},
    {"dataset-size", "synthetic samples (0: the real set's size)",
     &at<kT, &T::data, &DataConfig::synthetic_size>},
    {"data-noise", "synthetic data: weight of per-sample noise in [0, 1]",
     &at<kT, &T::data, &DataConfig::noise>},
    {"steps", "optimizer steps (overrides --epochs; 0: use --epochs)",
     &at<kT, &T::run, &Run::steps>},
    {"epochs", "epochs", &at<kT, &T::run, &Run::epochs>},
    {"batch-size", "samples per rank per step", &at<kT, &T::run, &Run::batch_size>},
    {"optimizer", "sgd|adamw", choice_field<kT, &T::optimizer, &Opt::kind>()},
    {"lr", "learning rate", &at<kT, &T::optimizer, &Opt::lr>},
    {"momentum", "SGD momentum", &at<kT, &T::optimizer, &Opt::momentum>},
    {"nesterov", "Nesterov momentum", &at<kT, &T::optimizer, &Opt::nesterov>},
    {"weight-decay", "weight decay", &at<kT, &T::optimizer, &Opt::weight_decay>},
    {"warmup-steps", "linear warmup steps", &at<kT, &T::optimizer, &Opt::warmup_steps>},
    {"lr-schedule", "constant|cosine|step", choice_field<kT, &T::optimizer, &Opt::schedule>()},
    {"scale-lr", "multiply --lr by the world size", &at<kT, &T::optimizer, &Opt::scale_lr>},
    {"clip-grad-norm", "clip the gradient norm (0: off)",
     &at<kT, &T::optimizer, &Opt::clip_grad_norm>},
    {"seed", "seed of weights and data order", &at<kT, &T::run, &Run::seed>},
    {"dtype", "float32|float64: parameter and activation dtype",
     choice_field<kT, &T::model, &ModelConfig::dtype>()},
    {"threads", "intra-op threads per rank", &at<&TrainConfig::threads>},
    {"strategy", "none|ddp|zero1|zero2|zero3|ps|easgd|gossip|local-sgd",
     choice_field<kT, &T::strategy, &Str::kind>()},
    {"wrap-policy", "zero3 units: auto|type:A,B|size:N|name:a,b|none",
     text_field<&parse_wrap_policy, &wrap_text, kT, &T::strategy, &Str::zero, &ZeroConfig::wrap>()},
    {"bucket-cap-mb", "DDP bucket size in MiB", &at<kT, &T::strategy, &Str::bucket_cap_mb>},
    {"grad-compression", "none|fp16|bf16|powersgd: compress DDP's all-reduce",
     choice_field<kT, &T::strategy, &Str::ddp, &DdpConfig::compression>()},
    {"powersgd-rank", "PowerSGD approximation rank",
     &at<kT, &T::strategy, &Str::ddp, &DdpConfig::powersgd_rank>},
    {"powersgd-start-iter", "steps of plain all-reduce before PowerSGD starts",
     &at<kT, &T::strategy, &Str::ddp, &DdpConfig::powersgd_start_iter>},
    {"servers", "ps, easgd, ddp with backups: the last N ranks serve parameters",
     &at<kT, &T::strategy, &Str::async, &Async::servers>},
    {"staleness", "ps: stale-synchronous bound in steps (-1: none)",
     &at<kT, &T::strategy, &Str::async, &Async::staleness>},
    {"tau", "easgd: steps between elastic exchanges",
     &at<kT, &T::strategy, &Str::async, &Async::tau>},
    {"alpha", "easgd: elastic coefficient in (0, 1]",
     &at<kT, &T::strategy, &Str::async, &Async::alpha>},
    {"sync-every", "local-sgd: steps between parameter averages",
     &at<kT, &T::strategy, &Str::async, &Async::sync_every>},
    {"gossip", "gossip: push|pull", choice_field<kT, &T::strategy, &Str::async, &Async::gossip>()},
    {"backup-workers", "ddp: apply the first workers-N gradients, drop the late ones",
     &at<kT, &T::strategy, &Str::async, &Async::backup_workers>},
    {"mesh", "model parallelism: dp=N,pp=P,tp=T (any of them; ranks = product)",
     text_field<&mesh_of, &mesh_text, kT, &T::mesh, &MeshConfig::shape>()},
    {"micro-batches", "pipeline: micro-batches per step",
     &at<kT, &T::mesh, &MeshConfig::micro_batches>},
    {"schedule", "pipeline: gpipe|1f1b", choice_field<kT, &T::mesh, &MeshConfig::schedule>()},
    {"recompute", "pipeline: recompute activations in backward",
     &at<kT, &T::mesh, &MeshConfig::recompute>},
    {"inject-delay", "straggler: ranks=R,ms=M[,prob=P] sleep before backward",
     text_field<&parse_inject_delay, &delay_text, kT, &T::straggler, &StragglerConfig::delay>()},
    {"inject-slowdown", "straggler: ranks=R,factor=F slower compute",
     text_field<&parse_inject_slowdown, &slowdown_text, kT, &T::straggler,
                &StragglerConfig::slowdown>()},
    {"backend", "auto|shm|gloo|mpi", &at<&TrainConfig::backend>},
    {"comm-timeout", "seconds a collective may wait for its peers (default: InitOptions', 300)",
     text_field<&comm_timeout_of, &seconds_text, &TrainConfig::comm_timeout>("SECONDS")},
    {"rendezvous-timeout", "seconds to wait for every rank to join (default: InitOptions', 120)",
     text_field<&rendezvous_timeout_of, &seconds_text, &TrainConfig::rendezvous_timeout>(
         "SECONDS")},
    {"eval-every", "steps between evaluations (0: at the end)",
     &at<kT, &T::observe, &Obs::eval_every>},
    {"log-every", "steps between progress updates", &at<kT, &T::observe, &Obs::log_every>},
    {"track-activations", "count live activations in the memory summary (slower)",
     &at<kT, &T::observe, &Obs::track_activations>},
    {"metrics", "append JSON lines to FILE ({rank} expands)",
     &at<kT, &T::observe, &Obs::metrics_file>},
    {"trace-dir", "write a Chrome trace per rank to DIR/rank-<r>.json",
     &at<kT, &T::observe, &Obs::trace_dir>},
    {"checkpoint-dir", "write checkpoints to DIR (rank 0; atomic; DIR/latest names the newest)",
     &at<kT, &T::checkpoint, &Ckpt::dir>},
    {"checkpoint-every", "steps between checkpoints (0: only at the end)",
     &at<kT, &T::checkpoint, &Ckpt::every>},
    {"resume",
     "continue from DIR/latest of --checkpoint-dir with the same data order, or start at step 0 "
     "if there is none yet; --resume=require fails instead",
     choice_field<kT, &T::checkpoint, &Ckpt::resume>(true)},
    {"elastic-batch",
     "global|per-rank: under elastic tandem-run, keep the global batch and sample order when "
     "workers leave or join, or keep the per-rank batch and scale the learning rate",
     choice_field<kT, &T::elastic, &ElasticConfig::batch>()},
};

size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1])});
      diagonal = up;
    }
  }
  return row[b.size()];
}

// Reads YAML text and names the text in every message.
class Parser {
 public:
  explicit Parser(const std::string& source) : source_(source) {}

  [[noreturn]] void fail(const YAML::Mark& mark, const std::string& what) const {
    const std::string where =
        mark.is_null() ? fmt::format("config file '{}'", source_)
                       : fmt::format("config file '{}', line {}", source_, mark.line + 1);
    throw InvalidArgument(fmt::format("{}: {}", where, what));
  }

  std::vector<YAML::Node> documents(const std::string& text) const {
    try {
      return YAML::LoadAll(text);
    } catch (const YAML::ParserException& e) {
      // An unclosed bracket or quote is found at the end of the text, one
      // line past the last; name the last line instead.
      const int lines = static_cast<int>(std::count(text.begin(), text.end(), '\n')) +
                        (!text.empty() && text.back() != '\n');
      if (!e.mark.is_null() && e.mark.line >= lines) {
        YAML::Mark last = e.mark;
        last.line = std::max(lines - 1, 0);
        fail(last, fmt::format("malformed YAML at the end of the file: {}", e.msg));
      }
      fail(e.mark, fmt::format("malformed YAML at column {}: {}", e.mark.column + 1, e.msg));
    }
  }

  template <typename V>
  void set(const ConfigKey& key, const YAML::Node& value, V& out) const {
    if (!value.IsScalar()) {
      fail(value.Mark(),
           fmt::format("key '{}' takes {}, not {}", key.name, kind<V>(), shape_of(value)));
    }
    try {
      out = value.as<V>();
    } catch (const YAML::BadConversion&) {
      fail(value.Mark(),
           fmt::format("key '{}' takes {} (got '{}')", key.name, kind<V>(), value.Scalar()));
    }
  }

  // A text key: the scalar, parsed by the key's own function.
  void set_text(const ConfigKey& key, const YAML::Node& value, const TextField& field,
                TrainConfig& config) const {
    if (!value.IsScalar()) {
      fail(value.Mark(), fmt::format("key '{}' takes a string, not {}", key.name, shape_of(value)));
    }
    try {
      field.set(config, value.Scalar());
    } catch (const InvalidArgument& e) {
      fail(value.Mark(), fmt::format("key '{}': {}", key.name, e.what()));
    }
  }

  static std::string shape_of(const YAML::Node& node) {
    switch (node.Type()) {
      case YAML::NodeType::Sequence:
        return "a sequence";
      case YAML::NodeType::Map:
        return "a mapping";
      case YAML::NodeType::Null:
        return "an empty value";
      default:
        return fmt::format("the scalar '{}'", node.Scalar());
    }
  }

 private:
  template <typename V>
  static std::string_view kind() {
    if constexpr (std::is_same_v<V, bool>) {
      return "true or false";
    } else if constexpr (std::is_same_v<V, std::string>) {
      return "a string";
    } else if constexpr (std::is_unsigned_v<V>) {
      return "a non-negative integer";
    } else if constexpr (std::is_integral_v<V>) {
      return "an integer";
    } else {
      static_assert(std::is_floating_point_v<V>);
      return "a number";
    }
  }

  const std::string& source_;
};

std::string unknown_key_message(std::string_view name) {
  // Suggest only a key within a few edits: 'foo' is no typo of 'lr'.
  const std::string_view nearest = nearest_config_key(name);
  const bool close = edit_distance(name, nearest) <= std::max<size_t>(2, name.size() / 2);
  return fmt::format(
      "unknown key '{}'{}; the keys are the long flags of 'tandem train' without '--' (see "
      "tandem train --help)",
      name, close ? fmt::format(" (did you mean '{}'?)", nearest) : "");
}

}  // namespace

std::span<const ConfigKey> train_config_keys() { return kKeys; }

const ConfigKey* find_config_key(std::string_view name) {
  for (const auto& key : kKeys) {
    if (key.name == name) return &key;
  }
  return nullptr;
}

std::string_view nearest_config_key(std::string_view name) {
  std::string_view best = kKeys[0].name;
  size_t best_distance = edit_distance(name, best);
  for (const auto& key : kKeys) {
    const size_t d = edit_distance(name, key.name);
    if (d < best_distance) {
      best = key.name;
      best_distance = d;
    }
  }
  return best;
}

TrainConfig parse_train_config(const std::string& text, const std::string& source,
                               const TrainConfig& base) {
  Parser parser(source);
  TrainConfig config = base;
  auto docs = parser.documents(text);
  if (docs.empty() || (docs.size() == 1 && docs[0].IsNull())) return config;
  if (docs.size() > 1) {
    parser.fail(docs[1].Mark(), fmt::format("holds {} YAML documents; put every key in one "
                                            "mapping",
                                            docs.size()));
  }
  const YAML::Node& root = docs[0];
  if (!root.IsMap()) {
    parser.fail(root.Mark(), fmt::format("the top level must be a mapping of keys to values "
                                         "(like 'batch-size: 32'), not {}",
                                         Parser::shape_of(root)));
  }
  std::map<std::string, int> first_line;
  for (const auto& item : root) {
    const YAML::Node& key_node = item.first;
    if (!key_node.IsScalar()) {
      parser.fail(key_node.Mark(), fmt::format("a key must be a name like 'batch-size', not {}",
                                               Parser::shape_of(key_node)));
    }
    const std::string name = key_node.Scalar();
    const ConfigKey* key = find_config_key(name);
    if (key == nullptr) parser.fail(key_node.Mark(), unknown_key_message(name));
    auto [it, fresh] = first_line.emplace(name, key_node.Mark().line + 1);
    if (!fresh) {
      parser.fail(key_node.Mark(), fmt::format("key '{}' is given twice (first on line {}); "
                                               "keep one",
                                               name, it->second));
    }
    if (const auto* text = std::get_if<TextField>(&key->field)) {
      parser.set_text(*key, item.second, *text, config);
    } else {
      std::visit(
          [&](auto field) {
            if constexpr (!std::is_same_v<decltype(field), TextField>) {
              parser.set(*key, item.second, field(config));
            }
          },
          key->field);
    }
  }
  return config;
}

TrainConfig load_train_config(const std::string& path, const TrainConfig& base) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    throw InvalidArgument(fmt::format("config file '{}' is a directory; give a YAML file", path));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw InvalidArgument(
        fmt::format("config file '{}' cannot be read: {}", path, std::strerror(errno)));
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) {
    throw InvalidArgument(
        fmt::format("config file '{}' cannot be read: {}", path, std::strerror(errno)));
  }
  return parse_train_config(text.str(), path, base);
}

void override_keys(TrainConfig& into, const TrainConfig& from, std::span<const std::string> names) {
  TrainConfig source = from;  // the accessors take a mutable config
  for (const auto& name : names) {
    const ConfigKey* key = find_config_key(name);
    if (key == nullptr) {
      throw InvalidArgument(fmt::format("override_keys: {}", unknown_key_message(name)));
    }
    std::visit(
        [&](auto field) {
          if constexpr (std::is_same_v<decltype(field), TextField>) {
            field.copy(into, from);
          } else {
            field(into) = field(source);
          }
        },
        key->field);
  }
}

}  // namespace tandem::train
