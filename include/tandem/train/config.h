// The options of `tandem train` as one table. Each entry is both a long flag
// of the command line (`--batch-size 32`) and a key of a YAML config file
// (`batch-size: 32`), so the two cannot drift apart: the CLI declares its
// flags from train_config_keys() and the loader accepts exactly those keys.
// Every entry writes one typed field of a TrainConfig; a key whose field is
// an enum, a mesh, a policy or a duration takes text that the entry parses
// once, with the same function for the flag and the key (choices.h,
// options.h).
//
// A config file is one YAML mapping of keys to scalars:
//   model: resnet18
//   data: synthetic-cifar
//   batch-size: 32
//   lr: 0.1
//   nesterov: true
// `tandem train --config run.yaml --lr 0.2` loads the file, then applies the
// flags given on the command line over it (override_keys()).
//
// Thread-safe: the table is immutable and the functions touch only their
// arguments. Nothing here is collective; every rank loads the same file.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>

#include "tandem/core/deadline.h"
#include "tandem/train/options.h"

namespace tandem::train {

// Everything `tandem train` takes: the trainer's options and the process
// settings the command applies itself before calling train().
struct TrainConfig {
  TrainerOptions trainer;
  // InitOptions::backend of the communicator: auto | shm | gloo | mpi.
  std::string backend = "auto";
  // Intra-op threads per rank (at::set_num_threads); at least 1.
  int threads = 1;
  // --comm-timeout and --rendezvous-timeout, in seconds on the command
  // line: InitOptions::timeout (every collective's deadline) and
  // InitOptions::rendezvous_timeout. nullopt: InitOptions' defaults.
  std::optional<Millis> comm_timeout;
  std::optional<Millis> rendezvous_timeout;
};

// Where a key's value lives in a TrainConfig; the alternative gives its type.
template <typename T>
using ConfigField = T& (*)(TrainConfig&);

// A field set from text: an enum by its spelling, a mesh, a wrap policy, a
// straggler, a duration in seconds.
struct TextField {
  // Parses `text` into the field. Throws InvalidArgument naming the flag.
  void (*set)(TrainConfig& config, const std::string& text);
  // The field's value as text that set() reads back ("" for none).
  std::string (*get)(const TrainConfig& config);
  // Copies the field from `from` into `into`.
  void (*copy)(TrainConfig& into, const TrainConfig& from);
  // An enum's spellings joined by '|' ("none|ddp|..."); "" for other text.
  std::string (*choices)();
  // The value's name in --help ("TEXT", "SECONDS").
  std::string_view type_name = "TEXT";
  // On the command line a flag: `--resume` alone is "true", `--resume=V` is V.
  bool flag = false;
};

using AnyConfigField =
    std::variant<ConfigField<std::string>, ConfigField<int64_t>, ConfigField<uint64_t>,
                 ConfigField<int>, ConfigField<double>, ConfigField<bool>, TextField>;

struct ConfigKey {
  std::string_view name;  // the YAML key and the long flag without "--"
  std::string_view help;  // one line for --help; the default is shown beside it
  AnyConfigField field;
};

// Every key, in --help order. bool keys are flags on the command line
// (`--nesterov`, `--nesterov=false`) and true/false in YAML.
std::span<const ConfigKey> train_config_keys();

// The key called `name`, or nullptr.
const ConfigKey* find_config_key(std::string_view name);

// The valid key closest to `name` by edit distance (for "did you mean").
std::string_view nearest_config_key(std::string_view name);

// Parses `text`, one YAML mapping of keys to scalars, into a copy of `base`:
// the keys the text names are set, the others keep base's values. An empty
// document (or only comments) sets nothing. `source` names the text in
// messages (the file's path). Throws InvalidArgument, "config file 'SOURCE',
// line N: ...", for malformed YAML, more than one document, a top level that
// is not a mapping, an unknown key (naming the nearest valid one), a key given
// twice, a value that is not a scalar of the key's type, and text that its
// key does not parse (an unknown --strategy, a bad --mesh). Value ranges
// (e.g. batch-size >= 1) are checked later, by validate_options().
TrainConfig parse_train_config(const std::string& text, const std::string& source,
                               const TrainConfig& base = {});

// Reads the file at `path` and parses it as parse_train_config() does. A
// missing or unreadable file is InvalidArgument naming the path.
TrainConfig load_train_config(const std::string& path, const TrainConfig& base = {});

// Copies the values of the keys in `names` from `from` into `into`: how flags
// given on the command line override a config file. Throws InvalidArgument
// on a name that is not a key.
void override_keys(TrainConfig& into, const TrainConfig& from, std::span<const std::string> names);

}  // namespace tandem::train
