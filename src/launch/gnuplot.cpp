#include "tandem/launch/gnuplot.h"

#include <fmt/format.h>

#include <cstdlib>
#include <optional>

#include "tandem/core/error.h"
#include "tandem/launch/child_processes.h"
#include "tandem/launch/program.h"

namespace tandem::launch {

std::string find_gnuplot(const std::string& what) {
  const char* path = std::getenv("PATH");
  try {
    return resolve_program("gnuplot", path ? std::optional<std::string>(path) : std::nullopt);
  } catch (const ProgramError&) {
    throw Error(
        fmt::format("{} needs gnuplot, which is not installed; install gnuplot-nox "
                    "(bash scripts/install-deps.sh does)",
                    what));
  }
}

std::string gnuplot_quoted(const std::string& text) {
  std::string out = "'";
  for (char c : text) out += c == '\'' ? std::string("''") : std::string(1, c);
  return out + "'";
}

void run_gnuplot(const std::string& script, const std::string& what, const std::string& output) {
  const std::string gnuplot = find_gnuplot(what);
  ChildProcesses child;
  child.start_program(0, gnuplot, {"gnuplot", script}, {"PATH=/usr/bin:/bin"});
  const auto& results = child.wait(Clock::now() + Millis(60'000));
  if (!results[0].ok()) {
    throw Error(fmt::format("{}: gnuplot could not draw '{}' ({}): {}", what, output,
                            results[0].how(), tail_lines(results[0].output, 10)));
  }
}

}  // namespace tandem::launch
