#include "comm/join.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <vector>

#include "tandem/core/error.h"

namespace tandem::detail {

void join_group(Store& store, int rank, int size, Millis timeout, const std::string& what,
                std::string_view timeout_hint) {
  store.set(fmt::format("joined/{}", rank), "1");
  std::vector<std::string> keys;
  for (int r = 0; r < size; ++r) keys.push_back(fmt::format("joined/{}", r));
  try {
    store.wait(keys, timeout);
  } catch (const TimeoutError&) {
    std::vector<int> missing;
    for (int r = 0; r < size; ++r) {
      if (!store.check(keys[r])) missing.push_back(r);
    }
    throw TimeoutError(fmt::format(
        "rank {}: {} timed out after {}: rank{} {} never arrived (of {}); check that every rank "
        "was started with the same world size and store address ({}), or {}",
        rank, what, format_duration(timeout), missing.size() == 1 ? "" : "s",
        fmt::join(missing, ", "), size, store.address(), timeout_hint));
  }
}

}  // namespace tandem::detail
