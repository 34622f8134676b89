// Check macros. TANDEM_CHECK throws tandem::InvalidArgument (the caller's
// input was wrong); TANDEM_ASSERT throws tandem::InternalError (a Tandem bug).
// Both format their message with fmt and are never compiled out. Only
// TANDEM_ASSERT records file:line: a user error is fixed from its message,
// and our source locations mean nothing to the user; a bug report needs them.
#pragma once

#include <fmt/format.h>

#include <string>

#include "tandem/core/error.h"

namespace tandem::detail {

// Throws InvalidArgument(msg), as it is.
[[noreturn]] void throw_invalid_argument(const std::string& msg);
// Throws InternalError naming `cond` and file:line, and asking for a report.
[[noreturn]] void throw_internal_error(const char* file, int line, const char* cond,
                                       const std::string& msg);

}  // namespace tandem::detail

#define TANDEM_CHECK(cond, ...)                                           \
  do {                                                                    \
    if (!(cond)) {                                                        \
      ::tandem::detail::throw_invalid_argument(fmt::format(__VA_ARGS__)); \
    }                                                                     \
  } while (0)

#define TANDEM_ASSERT(cond, ...)                                                                   \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      ::tandem::detail::throw_internal_error(__FILE__, __LINE__, #cond, fmt::format(__VA_ARGS__)); \
    }                                                                                              \
  } while (0)
