#include "bench/train_key_flags.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <type_traits>
#include <variant>

#include "tandem/core/check.h"

namespace tandem::bench {
namespace {

void add_key_flag(CLI::App& cmd, train::TrainConfig& flags, const train::ConfigKey& key,
                  const train::TrainConfig& defaults) {
  const std::string flag = "--" + std::string(key.name);
  const std::string help(key.help);
  std::visit(
      [&](auto field) {
        if constexpr (std::is_same_v<decltype(field), train::TextField>) {
          auto set = [&flags, field](const std::string& text) { field.set(flags, text); };
          CLI::Option* opt = field.flag ? cmd.add_flag(flag)->description(help)->each(set)
                                        : cmd.add_option_function<std::string>(flag, set, help);
          const std::string shown = field.get(defaults);
          if (!field.flag && !shown.empty()) opt->default_str(shown);
          if (!field.flag) opt->type_name(std::string(field.type_name));
        } else if constexpr (std::is_same_v<std::remove_reference_t<decltype(field(flags))>,
                                            bool>) {
          cmd.add_flag(flag, field(flags), help);
        } else {
          cmd.add_option(flag, field(flags), help)->capture_default_str();
        }
      },
      key.field);
}

}  // namespace

void add_train_key_flags(CLI::App& cmd, train::TrainConfig& flags,
                         std::span<const std::string_view> only) {
  const train::TrainConfig defaults;
  for (std::string_view name : only) {
    TANDEM_ASSERT(train::find_config_key(name) != nullptr, "'{}' is not a trainer option", name);
  }
  for (const auto& key : train::train_config_keys()) {
    if (!only.empty() && std::find(only.begin(), only.end(), key.name) == only.end()) continue;
    add_key_flag(cmd, flags, key, defaults);
  }
}

std::vector<std::string> given_train_keys(const CLI::App& cmd) {
  std::vector<std::string> given;
  for (const auto& key : train::train_config_keys()) {
    const CLI::Option* opt = cmd.get_option_no_throw("--" + std::string(key.name));
    if (opt && opt->count() > 0) given.emplace_back(key.name);
  }
  return given;
}

}  // namespace tandem::bench
