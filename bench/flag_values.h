// Checked parsing of the benchmarks' flags, the one parser every `tandem
// bench` number and choice goes through. A number's whole text must be the
// value (decimal, no trailing junk, no blanks, no hex or octal); a choice is
// one of a fixed set of names, turned into its enum here and compared as an
// enum everywhere else. Otherwise tandem::InvalidArgument names the command,
// the flag and the text. Lists are comma-separated (or the flag repeated),
// and every entry is checked. Ranges are the benches' to check. Thread-safe:
// plain functions.
#pragma once

#include <fmt/format.h>

#include <cstdint>
#include <functional>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tandem/core/error.h"

namespace CLI {
class App;
class Option;
}  // namespace CLI

namespace tandem::bench {

// `what` names the flag in messages ("bench memory: --ranks").
int64_t parse_int(std::string_view what, std::string_view text,
                  int64_t min = std::numeric_limits<int64_t>::min(),
                  int64_t max = std::numeric_limits<int64_t>::max());
// A finite number, in decimal or scientific notation.
double parse_double(std::string_view what, std::string_view text);

// One named alternative of an enum flag.
template <typename E>
struct Choice {
  std::string_view name;
  E value;
};

// The names of `choices`, comma-separated: "auto, shm, gloo".
template <typename E>
std::string choice_names(std::span<const Choice<E>> choices) {
  std::string out;
  for (const auto& c : choices) out += (out.empty() ? "" : ", ") + std::string(c.name);
  return out;
}

// The value named `text`. Throws InvalidArgument "WHAT TEXT is not one of
// ..." otherwise.
template <typename E>
E parse_choice(std::string_view what, std::string_view text, std::span<const Choice<E>> choices) {
  for (const auto& c : choices) {
    if (c.name == text) return c.value;
  }
  throw InvalidArgument(fmt::format("{} {} is not one of {}", what, text, choice_names(choices)));
}

// The name of `value` in `choices`, which must hold it.
template <typename E>
std::string choice_name(E value, std::span<const Choice<E>> choices) {
  for (const auto& c : choices) {
    if (c.value == value) return std::string(c.name);
  }
  throw InternalError("choice_name: a value without a name");
}

// Whether a list flag may be given as "" (no entries at all); an empty entry
// inside a list ("2,,4") is always an error.
enum class EmptyList { kRefused, kAllowed };

// CLI11 options of `command` whose values go through the parsers above. The
// help shows the type and the target's value as its default.
CLI::Option* add_int_flag(CLI::App& command, const std::string& flag, int& target,
                          const std::string& help);
CLI::Option* add_int_flag(CLI::App& command, const std::string& flag, int64_t& target,
                          const std::string& help);
CLI::Option* add_double_flag(CLI::App& command, const std::string& flag, double& target,
                             const std::string& help);
CLI::Option* add_int_list_flag(CLI::App& command, const std::string& flag, std::vector<int>& target,
                               const std::string& help, EmptyList empty = EmptyList::kRefused);
CLI::Option* add_int_list_flag(CLI::App& command, const std::string& flag,
                               std::vector<int64_t>& target, const std::string& help,
                               EmptyList empty = EmptyList::kRefused);

// The primitives under the flags above: `set(what, text)` parses the one
// value of a flag and stores it; `set(what, entries)` receives the entries
// of a list flag (each non-empty, else InvalidArgument; none for "" when
// `empty` allows it). `type` and `default_text` are what the help shows.
using ValueSetter = std::function<void(const std::string& what, const std::string& text)>;
using ListSetter = std::function<void(const std::string& what, const std::vector<std::string>&)>;
CLI::Option* add_value_flag(CLI::App& command, const std::string& flag, const std::string& type,
                            const std::string& default_text, ValueSetter set,
                            const std::string& help);
CLI::Option* add_list_flag(CLI::App& command, const std::string& flag, const std::string& type,
                           const std::string& default_text, ListSetter set, const std::string& help,
                           EmptyList empty = EmptyList::kRefused);

// A list of choices ("--strategies ddp,zero1").
template <typename E>
CLI::Option* add_choice_list_flag(CLI::App& command, const std::string& flag,
                                  std::vector<E>& target, std::span<const Choice<E>> choices,
                                  const std::string& help) {
  std::string defaults;
  for (E v : target) defaults += (defaults.empty() ? "" : ",") + choice_name(v, choices);
  return add_list_flag(
      command, flag, "NAME", defaults,
      [&target, choices](const std::string& what, const std::vector<std::string>& texts) {
        target.clear();
        for (const auto& t : texts) target.push_back(parse_choice(what, t, choices));
      },
      help);
}

// One choice ("--work sleep").
template <typename E>
CLI::Option* add_choice_flag(CLI::App& command, const std::string& flag, E& target,
                             std::span<const Choice<E>> choices, const std::string& help) {
  return add_value_flag(
      command, flag, "NAME", choice_name(target, choices),
      [&target, choices](const std::string& what, const std::string& text) {
        target = parse_choice(what, text, choices);
      },
      help);
}

}  // namespace tandem::bench
