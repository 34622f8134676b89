#include "tandem/core/check.h"

#include <cstring>

namespace tandem::detail {
namespace {

const char* base_name(const char* path) {
  const char* slash = std::strrchr(path, '/');
  return slash ? slash + 1 : path;
}

}  // namespace

void throw_invalid_argument(const std::string& msg) { throw InvalidArgument(msg); }

void throw_internal_error(const char* file, int line, const char* cond, const std::string& msg) {
  throw InternalError(fmt::format("internal error: {} ({} failed at {}:{}); please report this",
                                  msg, cond, base_name(file), line));
}

}  // namespace tandem::detail
