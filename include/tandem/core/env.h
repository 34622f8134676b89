// Reading the process environment. Values are read when asked for; callers
// read each variable once at start-up (rendezvous, logging) and pass the
// result on, so no code below the boundary depends on the environment.
// Thread-safe as long as nobody calls setenv concurrently.
#pragma once

#include <chrono>
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

// The value as an integer. Throws InvalidArgument naming the variable and
// its value when it is set but is not a whole number (trailing junk such as
// "4x" included), or lies outside [min, max] (overflow included).
std::optional<int64_t> get_int(const Lookup& lookup, const std::string& name,
                               int64_t min = INT64_MIN, int64_t max = INT64_MAX);

// The value as a duration in seconds, decimals allowed ("90", "2.5"),
// rounded up to whole milliseconds. Throws InvalidArgument naming the
// variable and its value when it is set but is not a number, is zero or
// negative, or exceeds a billion seconds.
std::optional<std::chrono::milliseconds> get_seconds(const Lookup& lookup, const std::string& name);

}  // namespace tandem::env
