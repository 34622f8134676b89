// Reading the process environment. Values are read when asked for; callers
// read each variable once at start-up (rendezvous, logging) and pass the
// result on, so no code below the boundary depends on the environment.
// Thread-safe as long as nobody calls setenv concurrently.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

namespace tandem::env {

// Looks a variable up; an injectable source makes parsing testable.
using Lookup = std::function<std::optional<std::string>(const std::string&)>;

// The real environment (getenv).
Lookup process_lookup();

// The value, or nullopt when unset or empty.
std::optional<std::string> get(const Lookup& lookup, const std::string& name);

// The value as an integer. Throws InvalidArgument naming the variable when it
// is set but is not a whole number in [min, max].
std::optional<int64_t> get_int(const Lookup& lookup, const std::string& name,
                               int64_t min = INT64_MIN, int64_t max = INT64_MAX);

}  // namespace tandem::env
