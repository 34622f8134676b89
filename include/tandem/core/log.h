// A minimal logger that writes one line per message to stderr, prefixed with
// the level and, when known, the rank ("[tandem W rank 1] ..."). The level is
// read once from TANDEM_LOG_LEVEL (debug|info|warn|error; default warn).
// Thread-safe: each line is written with a single write(2).
#pragma once

#include <fmt/format.h>

#include <string>

namespace tandem {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

namespace log {

// Sets the rank shown in the prefix (-1: unknown). Called by rendezvous.
void set_rank(int rank);
LogLevel level();
void write(LogLevel level, const std::string& msg);

template <typename... Args>
void debug(fmt::format_string<Args...> f, Args&&... args) {
  if (level() <= LogLevel::kDebug)
    write(LogLevel::kDebug, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void info(fmt::format_string<Args...> f, Args&&... args) {
  if (level() <= LogLevel::kInfo)
    write(LogLevel::kInfo, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void warn(fmt::format_string<Args...> f, Args&&... args) {
  if (level() <= LogLevel::kWarn)
    write(LogLevel::kWarn, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void error(fmt::format_string<Args...> f, Args&&... args) {
  write(LogLevel::kError, fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace log
}  // namespace tandem
