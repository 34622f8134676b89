#include "tandem/parallel/fsdp/wrap_policy.h"

#include <algorithm>

#include "tandem/core/check.h"

namespace tandem::parallel {

FsdpWrapPolicy parse_fsdp_wrap_policy(const std::string& text) {
  FsdpWrapPolicy policy;
  if (text == "none") return policy;
  const size_t colon = text.find(':');
  const std::string kind = text.substr(0, colon);
  const std::string rest = colon == std::string::npos ? "" : text.substr(colon + 1);
  std::vector<std::string> items;
  for (size_t start = 0; start <= rest.size();) {
    const size_t comma = std::min(rest.find(',', start), rest.size());
    if (comma > start) items.push_back(rest.substr(start, comma - start));
    start = comma + 1;
  }
  const char* forms =
      "'none', 'type:GptBlockImpl[,LinearImpl...]', 'size:<min_num_params>' or "
      "'name:block0[,block1...]'";
  TANDEM_CHECK(colon != std::string::npos && !items.empty(),
               "FSDP wrap policy '{}' is not one of {}", text, forms);
  if (kind == "type") {
    policy.module_types = items;
  } else if (kind == "name") {
    policy.module_names = items;
  } else if (kind == "size") {
    size_t used = 0;
    try {
      policy.min_num_params = std::stoll(items[0], &used);
    } catch (const std::exception&) {
      used = 0;
    }
    TANDEM_CHECK(items.size() == 1 && used == items[0].size() && policy.min_num_params > 0,
                 "FSDP wrap policy '{}': the size must be one positive parameter count", text);
  } else {
    TANDEM_CHECK(false, "FSDP wrap policy '{}' is not one of {}", text, forms);
  }
  return policy;
}

}  // namespace tandem::parallel
