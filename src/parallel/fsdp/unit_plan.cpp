#include "parallel/fsdp/unit_plan.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/nn/module.h>

#include <algorithm>
#include <map>
#include <set>

#include "tandem/core/check.h"

namespace tandem::parallel::detail {
namespace {

bool is_under(const std::string& param, const std::string& module) {
  return param.size() > module.size() && param.compare(0, module.size(), module) == 0 &&
         param[module.size()] == '.';
}

// Up to `limit` items, for messages.
std::string some_of(const std::vector<std::string>& items, size_t limit = 12) {
  std::vector<std::string> head(items.begin(), items.begin() + std::min(limit, items.size()));
  return fmt::format("{}{}", fmt::join(head, ", "), items.size() > limit ? ", ..." : "");
}

void check_policy(const FsdpWrapPolicy& p) {
  TANDEM_CHECK(p.min_num_params >= 0,
               "FsdpWrapPolicy::min_num_params must be >= 0 (got {}); 0 turns the size policy off",
               p.min_num_params);
  const int set =
      int(!p.module_types.empty()) + int(p.min_num_params > 0) + int(!p.module_names.empty());
  TANDEM_CHECK(set <= 1,
               "FsdpWrapPolicy: set only one of module_types, min_num_params and module_names "
               "(got module_types [{}], min_num_params {}, module_names [{}])",
               fmt::join(p.module_types, ", "), p.min_num_params, fmt::join(p.module_names, ", "));
}

// Submodule paths the policy wraps.
std::set<std::string> wrapped_modules(
    const std::vector<std::pair<std::string, std::shared_ptr<torch::nn::Module>>>& modules,
    const std::vector<std::string>& param_names, const FsdpWrapPolicy& p) {
  std::set<std::string> wrapped;
  if (!p.module_types.empty()) {
    std::set<std::string> present;
    for (const auto& [path, m] : modules) present.insert(m->name());
    for (const auto& type : p.module_types) {
      bool found = false;
      for (const auto& [path, m] : modules) {
        if (!module_type_matches(m->name(), type)) continue;
        wrapped.insert(path);
        found = true;
      }
      TANDEM_CHECK(found,
                   "FsdpWrapPolicy::module_types: no submodule is of type '{}'; the types present "
                   "are {}",
                   type, some_of({present.begin(), present.end()}));
    }
  } else if (!p.module_names.empty()) {
    std::vector<std::string> paths;
    for (const auto& [path, m] : modules) paths.push_back(path);
    for (const auto& name : p.module_names) {
      TANDEM_CHECK(std::find(paths.begin(), paths.end(), name) != paths.end(),
                   "FsdpWrapPolicy::module_names: no submodule is named '{}'; submodules are {}",
                   name, some_of(paths));
      wrapped.insert(name);
    }
  } else if (p.min_num_params > 0) {
    // Children come after their parent in named_modules(), so walking it
    // backwards sizes every subtree after the units inside it.
    std::vector<bool> taken(param_names.size(), false);
    for (auto it = modules.rbegin(); it != modules.rend(); ++it) {
      int64_t free_numel = 0;
      std::vector<size_t> mine;
      for (const auto& item : it->second->named_parameters(/*recurse=*/true)) {
        const std::string full = it->first + "." + item.key();
        auto pos = std::find(param_names.begin(), param_names.end(), full);
        if (pos == param_names.end()) continue;  // frozen
        const size_t i = static_cast<size_t>(pos - param_names.begin());
        if (taken[i]) continue;
        free_numel += item.value().numel();
        mine.push_back(i);
      }
      if (free_numel < p.min_num_params) continue;
      wrapped.insert(it->first);
      for (size_t i : mine) taken[i] = true;
    }
  }
  return wrapped;
}

}  // namespace

bool module_type_matches(const std::string& type_name, const std::string& wanted) {
  if (type_name == wanted) return true;
  return type_name.size() > wanted.size() + 2 &&
         type_name.compare(type_name.size() - wanted.size(), wanted.size(), wanted) == 0 &&
         type_name.compare(type_name.size() - wanted.size() - 2, 2, "::") == 0;
}

std::vector<UnitPlan> plan_units(const torch::nn::Module& root,
                                 const std::vector<std::string>& param_names,
                                 const FsdpWrapPolicy& policy) {
  check_policy(policy);
  std::vector<std::pair<std::string, std::shared_ptr<torch::nn::Module>>> modules;
  for (const auto& item : root.named_modules("", /*include_self=*/false)) {
    modules.emplace_back(item.key(), item.value());
  }
  const std::set<std::string> wrapped = wrapped_modules(modules, param_names, policy);
  // Each parameter goes to its deepest wrapped ancestor ("" = root unit).
  std::map<std::string, size_t> unit_index;
  std::vector<UnitPlan> units;
  for (size_t i = 0; i < param_names.size(); ++i) {
    std::string owner;
    for (const auto& w : wrapped) {
      if (is_under(param_names[i], w) && w.size() > owner.size()) owner = w;
    }
    auto [it, inserted] = unit_index.emplace(owner, units.size());
    if (inserted) units.push_back({owner, {}});
    units[it->second].params.push_back(i);
  }
  return units;
}

}  // namespace tandem::parallel::detail
