// The join barrier that every backend's setup starts with: each rank posts
// "joined/<rank>" to the group's store and waits for all the others, so that
// a rank that never arrives is named, instead of surfacing later as an
// anonymous transport timeout.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "tandem/comm/store.h"

namespace tandem::detail {

// Blocks until all `size` ranks joined or `timeout` passes; then throws
// TimeoutError: "rank 0: <what> timed out after 2.0 s: ranks 2, 3 never
// arrived (...)". `what` names the setup ("gloo setup of group 'world'"),
// `timeout_hint` the setting that raises `timeout` (comm/timeout_hints.h).
void join_group(Store& store, int rank, int size, Millis timeout, const std::string& what,
                std::string_view timeout_hint);

}  // namespace tandem::detail
