#include "tandem/train/config.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
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

// Accessors the table points at: a field of the TrainConfig itself or of its
// TrainerOptions.
template <auto Member>
auto& own(TrainConfig& c) {
  return c.*Member;
}
template <auto Member>
auto& trainer(TrainConfig& c) {
  return c.trainer.*Member;
}

// In --help order. An option of TrainerOptions that users should set is one
// line here and becomes both a flag and a config key; `eval_batches` and
// `stop_at_step` are for tests and stay out.
using T = TrainerOptions;
const ConfigKey kKeys[] = {
    {"model", "mlp|convnet|resnet18|resnet50|gpt-mini", &trainer<&T::model>},
    {"data", "a path, or synthetic-mnist|synthetic-cifar|synthetic-tokens", &trainer<&T::data>},
    {"dataset-size", "synthetic samples (0: the real set's size)", &trainer<&T::dataset_size>},
    {"data-noise", "synthetic data: weight of per-sample noise in [0, 1]",
     &trainer<&T::data_noise>},
    {"steps", "optimizer steps (overrides --epochs; 0: use --epochs)", &trainer<&T::steps>},
    {"epochs", "epochs", &trainer<&T::epochs>},
    {"batch-size", "samples per rank per step", &trainer<&T::batch_size>},
    {"optimizer", "sgd|adamw", &trainer<&T::optimizer>},
    {"lr", "learning rate", &trainer<&T::lr>},
    {"momentum", "SGD momentum", &trainer<&T::momentum>},
    {"nesterov", "Nesterov momentum", &trainer<&T::nesterov>},
    {"weight-decay", "weight decay", &trainer<&T::weight_decay>},
    {"warmup-steps", "linear warmup steps", &trainer<&T::warmup_steps>},
    {"lr-schedule", "constant|cosine|step", &trainer<&T::lr_schedule>},
    {"scale-lr", "multiply --lr by the world size", &trainer<&T::scale_lr>},
    {"clip-grad-norm", "clip the gradient norm (0: off)", &trainer<&T::clip_grad_norm>},
    {"seed", "seed of weights and data order", &trainer<&T::seed>},
    {"dtype", "float32|float64: parameter and activation dtype", &trainer<&T::dtype>},
    {"threads", "intra-op threads per rank", &own<&TrainConfig::threads>},
    {"strategy", "none|ddp|zero1|zero2|zero3|ps|easgd|gossip|local-sgd", &trainer<&T::strategy>},
    {"wrap-policy", "zero3 units: auto|type:A,B|size:N|name:a,b|none", &trainer<&T::wrap_policy>},
    {"bucket-cap-mb", "DDP bucket size in MiB", &trainer<&T::bucket_cap_mb>},
    {"grad-compression", "none|fp16|bf16|powersgd: compress DDP's all-reduce",
     &trainer<&T::grad_compression>},
    {"powersgd-rank", "PowerSGD approximation rank", &trainer<&T::powersgd_rank>},
    {"powersgd-start-iter", "steps of plain all-reduce before PowerSGD starts",
     &trainer<&T::powersgd_start_iter>},
    {"servers", "ps, easgd, ddp with backups: the last N ranks serve parameters",
     &trainer<&T::servers>},
    {"staleness", "ps: stale-synchronous bound in steps (-1: none)", &trainer<&T::staleness>},
    {"tau", "easgd: steps between elastic exchanges", &trainer<&T::tau>},
    {"alpha", "easgd: elastic coefficient in (0, 1]", &trainer<&T::alpha>},
    {"sync-every", "local-sgd: steps between parameter averages", &trainer<&T::sync_every>},
    {"gossip", "gossip: push|pull", &trainer<&T::gossip>},
    {"backup-workers", "ddp: apply the first workers-N gradients, drop the late ones",
     &trainer<&T::backup_workers>},
    {"mesh", "model parallelism: dp=N,pp=P,tp=T (any of them; ranks = product)", &trainer<&T::mesh>},
    {"micro-batches", "pipeline: micro-batches per step", &trainer<&T::micro_batches>},
    {"schedule", "pipeline: gpipe|1f1b", &trainer<&T::pipeline_schedule>},
    {"recompute", "pipeline: recompute activations in backward", &trainer<&T::recompute>},
    {"inject-delay", "straggler: ranks=R,ms=M[,prob=P] sleep before backward",
     &trainer<&T::inject_delay>},
    {"inject-slowdown", "straggler: ranks=R,factor=F slower compute",
     &trainer<&T::inject_slowdown>},
    {"backend", "auto|shm|gloo|mpi", &own<&TrainConfig::backend>},
    {"eval-every", "steps between evaluations (0: at the end)", &trainer<&T::eval_every>},
    {"log-every", "steps between progress updates", &trainer<&T::log_every>},
    {"track-activations", "count live activations in the memory summary (slower)",
     &trainer<&T::track_activations>},
    {"metrics", "append JSON lines to FILE ({rank} expands)", &trainer<&T::metrics_file>},
    {"trace-dir", "write a Chrome trace per rank to DIR/rank-<r>.json", &trainer<&T::trace_dir>},
    {"checkpoint-dir", "write checkpoints to DIR (rank 0; atomic; DIR/latest names the newest)",
     &trainer<&T::checkpoint_dir>},
    {"checkpoint-every", "steps between checkpoints (0: only at the end)",
     &trainer<&T::checkpoint_every>},
    {"resume", "continue from DIR/latest of --checkpoint-dir with the same data order",
     &trainer<&T::resume>},
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
    std::visit([&](auto field) { parser.set(*key, item.second, field(config)); }, key->field);
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
    std::visit([&](auto field) { field(into) = field(source); }, key->field);
  }
}

}  // namespace tandem::train
