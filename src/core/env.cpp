#include "tandem/core/env.h"

#include <charconv>
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
  TANDEM_CHECK(ec == std::errc() && ptr == end,
               "environment variable {}='{}' is not a whole number", name, *v);
  TANDEM_CHECK(out >= min && out <= max, "environment variable {}={} is out of range [{}, {}]",
               name, out, min, max);
  return out;
}

}  // namespace tandem::env
