// Small statistics shared by the `tandem bench` subcommands that repeat their
// runs in rounds (ddp, fsdp) and report the middle value.
#pragma once

#include <algorithm>
#include <vector>

namespace tandem::tools {

// The median of `values`; an even count averages the middle two. `values`
// must not be empty.
inline double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const size_t h = values.size() / 2;
  return values.size() % 2 == 1 ? values[h] : (values[h - 1] + values[h]) / 2;
}

}  // namespace tandem::tools
