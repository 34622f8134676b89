// An injectable environment for tests of code that reads variables.
#pragma once

#include <map>
#include <optional>
#include <string>

#include "tandem/core/env.h"

namespace tandem::testing {

inline env::Lookup fake_env(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const std::string& k) -> std::optional<std::string> {
    auto it = vars.find(k);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

}  // namespace tandem::testing
