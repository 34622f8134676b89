#include "tandem/core/log.h"

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <string_view>

namespace tandem::log {
namespace {

std::atomic<int> g_rank{-1};

LogLevel read_level() {
  const char* v = std::getenv("TANDEM_LOG_LEVEL");
  if (v == nullptr) return LogLevel::kWarn;
  std::string_view s(v);
  if (s == "debug") return LogLevel::kDebug;
  if (s == "info") return LogLevel::kInfo;
  if (s == "error") return LogLevel::kError;
  return LogLevel::kWarn;
}

char level_letter(LogLevel l) {
  switch (l) {
    case LogLevel::kDebug:
      return 'D';
    case LogLevel::kInfo:
      return 'I';
    case LogLevel::kWarn:
      return 'W';
    case LogLevel::kError:
      return 'E';
  }
  return '?';
}

}  // namespace

void set_rank(int rank) { g_rank.store(rank); }

LogLevel level() {
  static const LogLevel kLevel = read_level();
  return kLevel;
}

void write(LogLevel l, const std::string& msg) {
  int rank = g_rank.load();
  std::string line = rank >= 0 ? fmt::format("[tandem {} rank {}] {}\n", level_letter(l), rank, msg)
                               : fmt::format("[tandem {}] {}\n", level_letter(l), msg);
  // One write(2) per line keeps lines from different threads whole.
  ssize_t ignored = ::write(STDERR_FILENO, line.data(), line.size());
  (void)ignored;
}

}  // namespace tandem::log
