// The output side of a node's workers: each chunk a worker writes goes raw to
// its log file (with --log-dir) and, split into whole lines with the
// "[rank i] " prefix, to LaunchOutput. ProcessGroup and ElasticGroup share
// it. Not thread-safe: the thread that polls the children calls it.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "launch/output_prefixer.h"
#include "tandem/launch/child_processes.h"
#include "tandem/launch/launch_options.h"

namespace tandem::launch {

class WorkerRelays {
 public:
  // The references must outlive this object.
  WorkerRelays(const LaunchOptions& options, const LaunchOutput& output);
  // Closes the log files.
  ~WorkerRelays();
  WorkerRelays(const WorkerRelays&) = delete;
  WorkerRelays& operator=(const WorkerRelays&) = delete;

  // Adds the relay of the next child in start order, for `rank`. With
  // --log-dir it opens <dir>/rank-<rank>.log: truncated when `separator` is
  // empty, otherwise appended to after the line `separator`, so that one file
  // holds a rank's whole history. Throws tandem::Error when the file cannot
  // be opened.
  void add(int rank, const std::string& separator);

  // A chunk of child `index`'s output; a log that cannot be written is
  // closed with a status line, and the job goes on.
  void relay(size_t index, Stream stream, std::string_view data);
  // The stream has ended: flush its unfinished line.
  void end_stream(size_t index, Stream stream);

 private:
  struct Relay {
    int rank = 0;
    int log_fd = -1;
    std::string log_path;
    OutputPrefixer out_lines{""};
    OutputPrefixer err_lines{""};
  };

  const LaunchOptions& options_;
  const LaunchOutput& output_;
  std::vector<Relay> relays_;  // in start order
};

}  // namespace tandem::launch
