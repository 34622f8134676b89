#include "comm/c10d_logging.h"

#include <c10/util/Logging.h>

#include <mutex>
#include <string>

#include "tandem/core/check.h"
#include "tandem/core/env.h"
#include "tandem/core/log.h"

namespace tandem::detail {
namespace {

bool keep_c10d_logs() {
  // A throwing initialiser leaves the static unset: the next call reads again.
  static const bool keep = [] {
    auto v = env::get(env::process_lookup(), "TANDEM_C10D_LOG");
    TANDEM_CHECK(!v || *v == "0" || *v == "1",
                 "environment variable TANDEM_C10D_LOG='{}' must be 0 or 1 (1 keeps LibTorch "
                 "c10d's own log lines)",
                 *v);
    return v && *v == "1";
  }();
  return keep;
}

class DebugLogHandler final : public c10::WarningHandler {
 public:
  void process(const c10::SourceLocation& where, const std::string& msg, bool) override {
    log::debug("c10d warning ({}:{}): {}", where.file, where.line, msg);
  }
};

}  // namespace

void quiet_c10d_logs() {
  if (keep_c10d_logs()) return;
  static std::once_flag once;
  // c10d's logging macros test this level before they format anything;
  // 3 (fatal) leaves only lines that end the process anyway. c10d failures
  // still reach Tandem as exceptions, whose messages Tandem passes on.
  std::call_once(once, [] { FLAGS_caffe2_log_level = 3; });
}

QuietC10dWarnings::QuietC10dWarnings() {
  if (keep_c10d_logs()) return;
  static DebugLogHandler handler;
  previous_ = c10::Warning::get_warning_handler();
  c10::Warning::set_warning_handler(&handler);
}

QuietC10dWarnings::~QuietC10dWarnings() {
  if (previous_ != nullptr) c10::Warning::set_warning_handler(previous_);
}

}  // namespace tandem::detail
