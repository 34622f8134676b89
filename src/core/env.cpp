#include "tandem/core/env.h"

#include <charconv>
#include <cmath>
#include <cstdlib>

#include "tandem/core/check.h"

namespace tandem::env {

Lookup process_lookup() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    if (v == nullptr) return std::nullopt;
    return std::string(v);
  };
}

std::optional<std::string> get(const Lookup& lookup, const std::string& name) {
  auto v = lookup(name);
  if (!v || v->empty()) return std::nullopt;
  return v;
}

std::optional<int64_t> get_int(const Lookup& lookup, const std::string& name, int64_t min,
                               int64_t max) {
  auto v = get(lookup, name);
  if (!v) return std::nullopt;
  int64_t out = 0;
  const char* begin = v->data();
  const char* end = begin + v->size();
  auto [ptr, ec] = std::from_chars(begin, end, out);
  const bool whole = ptr == end && (ec == std::errc() || ec == std::errc::result_out_of_range);
  TANDEM_CHECK(whole, "environment variable {}='{}' is not a whole number", name, *v);
  TANDEM_CHECK(ec == std::errc() && out >= min && out <= max,
               "environment variable {}={} is out of range [{}, {}]", name, *v, min, max);
  return out;
}

std::optional<std::chrono::milliseconds> get_seconds(const Lookup& lookup,
                                                     const std::string& name) {
  // A billion seconds (~32 years) is far beyond any real wait and far below
  // where milliseconds in an int64 overflow.
  constexpr double kMaxSeconds = 1e9;
  auto v = get(lookup, name);
  if (!v) return std::nullopt;
  double seconds = 0;
  const char* begin = v->data();
  const char* end = begin + v->size();
  auto [ptr, ec] = std::from_chars(begin, end, seconds);
  TANDEM_CHECK(ec == std::errc() && ptr == end && std::isfinite(seconds),
               "environment variable {}='{}' is not a number of seconds (e.g. 90 or 2.5)", name,
               *v);
  TANDEM_CHECK(seconds > 0 && seconds <= kMaxSeconds,
               "environment variable {}={} must be a positive number of seconds, at most {:g}; "
               "there is no 'wait forever'",
               name, *v, kMaxSeconds);
  return std::chrono::milliseconds(static_cast<int64_t>(std::ceil(seconds * 1000.0)));
}

}  // namespace tandem::env
