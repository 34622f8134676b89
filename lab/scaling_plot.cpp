#include "lab/scaling_plot.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "tandem/core/error.h"
#include "tandem/launch/child_processes.h"
#include "tandem/launch/program.h"

namespace tandem::lab {
namespace {

std::string find_gnuplot() {
  const char* path = std::getenv("PATH");
  try {
    return launch::resolve_program("gnuplot", path ? std::optional<std::string>(path)
                                                   : std::nullopt);
  } catch (const launch::ProgramError&) {
    throw Error(
        "simulate: --plot needs gnuplot, which is not installed; install gnuplot-nox "
        "(bash scripts/install-deps.sh does)");
  }
}

// gnuplot quotes: a single-quoted string doubles its quotes.
std::string quoted(const std::string& text) {
  std::string out = "'";
  for (char c : text) out += c == '\'' ? std::string("''") : std::string(1, c);
  return out + "'";
}

std::string script(const std::string& png, const std::string& title, const std::string& data,
                   const std::vector<PlotSeries>& series) {
  std::string s = fmt::format(
      "set terminal pngcairo size 1200,500 noenhanced\nset output {}\n"
      "set multiplot layout 1,2 title {}\nset logscale x 2\nset grid\nset key bottom left\n"
      "set xlabel 'processes'\n",
      quoted(png), quoted(title));
  auto plot = [&](int column, const char* ylabel, bool log_y) {
    s += fmt::format("set ylabel '{}'\n{}", ylabel, log_y ? "set logscale y\n" : "unset logscale y\n");
    s += "plot ";
    for (size_t i = 0; i < series.size(); ++i) {
      s += fmt::format("{}{} index {} using 1:{} with linespoints lw 2 title {}", i ? ", " : "",
                       quoted(data), i, column, quoted(series[i].label));
    }
    s += "\n";
  };
  plot(2, "scaling efficiency", false);
  plot(3, "step time (s)", true);
  return s + "unset multiplot\n";
}

}  // namespace

void write_scaling_plot(const std::string& png_path, const std::string& title,
                        const std::vector<PlotSeries>& series) {
  const std::string gnuplot = find_gnuplot();
  const auto dir = std::filesystem::temp_directory_path() /
                   fmt::format("tandem-plot-{}", static_cast<long>(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string data = (dir / "series.dat").string();
  const std::string plot = (dir / "plot.gp").string();
  {
    std::ofstream out(data);
    for (const PlotSeries& s : series) {
      for (const auto& p : s.points) out << p.processes << ' ' << p.efficiency << ' ' << p.step_s << '\n';
      out << "\n\n";  // gnuplot's data-set separator, read by `index`
    }
    std::ofstream(plot) << script(png_path, title, data, series);
  }
  launch::ChildProcesses child;
  child.start_program(0, gnuplot, {"gnuplot", plot}, {"PATH=/usr/bin:/bin"});
  const auto& results = child.wait(Clock::now() + Millis(60'000));
  std::filesystem::remove_all(dir);
  if (!results[0].ok()) {
    throw Error(fmt::format("simulate: gnuplot could not draw '{}' ({}): {}", png_path,
                            results[0].how(), launch::tail_lines(results[0].output, 10)));
  }
}

}  // namespace tandem::lab
