// Splits one stream of a worker's output into whole lines and prefixes each
// ("[rank 3] loss 0.25\n"), so that lines of different ranks never mix
// mid-line on the launcher's stdout. Thread-compatible: one object per stream.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>

namespace tandem::launch {

class OutputPrefixer {
 public:
  // A partial line longer than this is emitted with a newline added, so a
  // worker that never ends its line (a progress bar using '\r') cannot grow
  // the buffer without bound.
  static constexpr size_t kMaxPendingBytes = 64 * 1024;

  // `prefix` is put before every line; empty means lines pass unchanged.
  explicit OutputPrefixer(std::string prefix) : prefix_(std::move(prefix)) {}

  // Takes the next chunk of output and returns the complete lines it ends
  // (each prefixed); an unfinished line is kept until more data comes.
  std::string feed(std::string_view chunk);

  // The unfinished line, if any, prefixed and ended with '\n'; empty when
  // nothing is pending. Call once the stream has ended.
  std::string finish();

 private:
  std::string prefix_;
  std::string pending_;
};

}  // namespace tandem::launch
