// The flags of the trainer's option table (tandem/train/config.h) on a
// CLI11 command: `tandem train` declares all of them, and `tandem simulate`
// and `tandem lab` the ones that describe a strategy, so that the same
// spelling means the same option everywhere. Each flag writes its field of a
// TrainConfig as CLI11 reads it; text fields parse there, with the table's
// own parser. Not thread-safe (like CLI11).
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tandem/train/config.h"

namespace CLI {
class App;
}

namespace tandem::bench {

// Adds one flag per key of train_config_keys(), bound to `flags` (which must
// outlive `cmd`), or only the keys in `only` when it is not empty (throws
// InternalError for a name that is not a key).
void add_train_key_flags(CLI::App& cmd, train::TrainConfig& flags,
                         std::span<const std::string_view> only = {});

// The keys whose flags were given on the command line of `cmd`.
std::vector<std::string> given_train_keys(const CLI::App& cmd);

}  // namespace tandem::bench
