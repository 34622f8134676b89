// Private helpers shared by the store implementations.
#pragma once

#include <string>
#include <vector>

#include "tandem/comm/store.h"

namespace tandem::detail {

// Waits for `keys` by polling store.check() with backoff (20 ms at most
// between turns); throws TimeoutError naming the missing keys.
void poll_store_keys(Store& store, const std::vector<std::string>& keys, Millis timeout);

}  // namespace tandem::detail
