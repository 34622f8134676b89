#include "launch/worker_relays.h"

#include <errno.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <string.h>
#include <unistd.h>

#include "tandem/core/error.h"

namespace tandem::launch {
namespace {

bool write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

}  // namespace

WorkerRelays::WorkerRelays(const LaunchOptions& options, const LaunchOutput& output)
    : options_(options), output_(output) {}

WorkerRelays::~WorkerRelays() {
  for (auto& w : relays_) {
    if (w.log_fd >= 0) ::close(w.log_fd);
  }
}

void WorkerRelays::add(int rank, const std::string& separator) {
  Relay& w = relays_.emplace_back();
  w.rank = rank;
  std::string prefix = options_.prefix_output ? fmt::format("[rank {}] ", rank) : "";
  w.out_lines = OutputPrefixer(prefix);
  w.err_lines = OutputPrefixer(prefix);
  if (!options_.log_dir) return;
  w.log_path = fmt::format("{}/rank-{}.log", *options_.log_dir, rank);
  int flags = O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (separator.empty() ? O_TRUNC : 0);
  w.log_fd = ::open(w.log_path.c_str(), flags, 0644);
  if (w.log_fd < 0) {
    throw Error(
        fmt::format("cannot open log file '{}': {}; check --log-dir", w.log_path, strerror(errno)));
  }
  if (!separator.empty()) write_all(w.log_fd, separator + "\n");
}

void WorkerRelays::relay(size_t index, Stream stream, std::string_view data) {
  Relay& w = relays_[index];
  const bool is_err = stream == Stream::kStderr;
  if (w.log_fd >= 0 && !write_all(w.log_fd, data)) {
    output_.status(fmt::format("tandem-run: cannot write '{}': {}; rank {}'s log stops here\n",
                               w.log_path, strerror(errno), w.rank));
    ::close(w.log_fd);
    w.log_fd = -1;
  }
  std::string lines = (is_err ? w.err_lines : w.out_lines).feed(data);
  if (!lines.empty()) (is_err ? output_.err : output_.out)(lines);
}

void WorkerRelays::end_stream(size_t index, Stream stream) {
  Relay& w = relays_[index];
  const bool is_err = stream == Stream::kStderr;
  std::string rest = (is_err ? w.err_lines : w.out_lines).finish();
  if (!rest.empty()) (is_err ? output_.err : output_.out)(rest);
}

}  // namespace tandem::launch
