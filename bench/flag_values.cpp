#include "bench/flag_values.h"

#include <fmt/ranges.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <charconv>
#include <cmath>

namespace tandem::bench {
namespace {

// "bench memory: --ranks": the command path of `command` and the flag.
std::string flag_name(const CLI::App& command, const std::string& flag) {
  std::string path = command.get_name();
  for (const CLI::App* up = command.get_parent(); up && up->get_parent(); up = up->get_parent()) {
    path = up->get_name() + " " + path;
  }
  return path + ": " + flag;
}

template <typename Int>
Int checked_int(const std::string& what, const std::string& text) {
  return static_cast<Int>(
      parse_int(what, text, std::numeric_limits<Int>::min(), std::numeric_limits<Int>::max()));
}

template <typename Int>
CLI::Option* add_int(CLI::App& command, const std::string& flag, Int& target,
                     const std::string& help) {
  return add_value_flag(
      command, flag, "INT", std::to_string(target),
      [&target](const std::string& what, const std::string& text) {
        target = checked_int<Int>(what, text);
      },
      help);
}

template <typename Int>
CLI::Option* add_int_list(CLI::App& command, const std::string& flag, std::vector<Int>& target,
                          const std::string& help, EmptyList empty) {
  return add_list_flag(
      command, flag, "INT", fmt::format("{}", fmt::join(target, ",")),
      [&target](const std::string& what, const std::vector<std::string>& texts) {
        target.clear();
        for (const auto& text : texts) target.push_back(checked_int<Int>(what, text));
      },
      help, empty);
}

// Appends the comma-separated entries of `text`. Split here, not by CLI11's
// delimiter, which drops empty entries.
void split_entries(const std::string& what, const std::string& text,
                   std::vector<std::string>& entries) {
  for (size_t begin = 0;;) {
    const size_t comma = std::min(text.find(',', begin), text.size());
    entries.push_back(text.substr(begin, comma - begin));
    if (entries.back().empty()) {
      throw InvalidArgument(fmt::format("{} has an empty entry (in '{}')", what, text));
    }
    if (comma == text.size()) return;
    begin = comma + 1;
  }
}

}  // namespace

int64_t parse_int(std::string_view what, std::string_view text, int64_t min, int64_t max) {
  int64_t value = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (text.empty() || ptr != end || ec == std::errc::invalid_argument) {
    throw InvalidArgument(fmt::format("{} takes whole numbers (got '{}')", what, text));
  }
  if (ec == std::errc::result_out_of_range || value < min || value > max) {
    throw InvalidArgument(
        fmt::format("{} {} is out of range (it must lie in [{}, {}])", what, text, min, max));
  }
  return value;
}

double parse_double(std::string_view what, std::string_view text) {
  double value = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (text.empty() || ptr != end || ec != std::errc() || !std::isfinite(value)) {
    throw InvalidArgument(fmt::format("{} takes a finite number (got '{}')", what, text));
  }
  return value;
}

CLI::Option* add_int_flag(CLI::App& command, const std::string& flag, int& target,
                          const std::string& help) {
  return add_int(command, flag, target, help);
}

CLI::Option* add_int_flag(CLI::App& command, const std::string& flag, int64_t& target,
                          const std::string& help) {
  return add_int(command, flag, target, help);
}

CLI::Option* add_double_flag(CLI::App& command, const std::string& flag, double& target,
                             const std::string& help) {
  return add_value_flag(
      command, flag, "FLOAT", fmt::format("{}", target),
      [&target](const std::string& what, const std::string& text) {
        target = parse_double(what, text);
      },
      help);
}

CLI::Option* add_int_list_flag(CLI::App& command, const std::string& flag, std::vector<int>& target,
                               const std::string& help, EmptyList empty) {
  return add_int_list(command, flag, target, help, empty);
}

CLI::Option* add_int_list_flag(CLI::App& command, const std::string& flag,
                               std::vector<int64_t>& target, const std::string& help,
                               EmptyList empty) {
  return add_int_list(command, flag, target, help, empty);
}

CLI::Option* add_value_flag(CLI::App& command, const std::string& flag, const std::string& type,
                            const std::string& default_text, ValueSetter set,
                            const std::string& help) {
  const std::string what = flag_name(command, flag);
  return command
      .add_option_function<std::string>(
          flag, [what, set = std::move(set)](const std::string& text) { set(what, text); }, help)
      ->type_name(type)
      ->default_str(default_text);
}

CLI::Option* add_list_flag(CLI::App& command, const std::string& flag, const std::string& type,
                           const std::string& default_text, ListSetter set, const std::string& help,
                           EmptyList empty) {
  const std::string what = flag_name(command, flag);
  return command
      .add_option_function<std::vector<std::string>>(
          flag,
          [what, set = std::move(set), empty](const std::vector<std::string>& texts) {
            std::vector<std::string> entries;
            for (const auto& text : texts) {
              if (text.empty() && empty == EmptyList::kAllowed) continue;
              if (text.empty()) {
                throw InvalidArgument(fmt::format("{} takes at least one entry (got '')", what));
              }
              split_entries(what, text, entries);
            }
            set(what, entries);
          },
          help)
      ->type_name(type)
      ->default_str(default_text);
}

}  // namespace tandem::bench
