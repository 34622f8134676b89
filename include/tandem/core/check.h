// Check macros. TANDEM_CHECK throws tandem::InvalidArgument (the caller's
// input was wrong); TANDEM_ASSERT throws tandem::InternalError (a Tandem bug).
// Both format their message with fmt, record file:line, and are never compiled
// out.
#pragma once

#include <fmt/format.h>

#include <string>

#include "tandem/core/error.h"

namespace tandem::detail {

[[noreturn]] void throw_invalid_argument(const char* file, int line, const std::string& msg);
[[noreturn]] void throw_internal_error(const char* file, int line, const char* cond,
                                       const std::string& msg);

}  // namespace tandem::detail

#define TANDEM_CHECK(cond, ...)                                                               \
  do {                                                                                        \
    if (!(cond)) {                                                                            \
      ::tandem::detail::throw_invalid_argument(__FILE__, __LINE__, fmt::format(__VA_ARGS__)); \
    }                                                                                         \
  } while (0)

#define TANDEM_ASSERT(cond, ...)                                                                   \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      ::tandem::detail::throw_internal_error(__FILE__, __LINE__, #cond, fmt::format(__VA_ARGS__)); \
    }                                                                                              \
  } while (0)
