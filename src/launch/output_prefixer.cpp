#include "launch/output_prefixer.h"

namespace tandem::launch {

std::string OutputPrefixer::feed(std::string_view chunk) {
  std::string out;
  while (!chunk.empty()) {
    size_t nl = chunk.find('\n');
    if (nl == std::string_view::npos) {
      pending_.append(chunk);
      if (pending_.size() > kMaxPendingBytes) out += finish();
      break;
    }
    out += prefix_;
    out += pending_;
    out.append(chunk.substr(0, nl + 1));
    pending_.clear();
    chunk.remove_prefix(nl + 1);
  }
  return out;
}

std::string OutputPrefixer::finish() {
  if (pending_.empty()) return {};
  std::string out = prefix_ + pending_ + "\n";
  pending_.clear();
  return out;
}

}  // namespace tandem::launch
