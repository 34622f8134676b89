#include "lab/scaling_plot.h"

#include <fmt/format.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "tandem/core/error.h"
#include "tandem/launch/gnuplot.h"

namespace tandem::lab {
namespace {

std::string script(const std::string& png, const std::string& title, const std::string& data,
                   const std::vector<PlotSeries>& series, const PlotPanels& panels) {
  std::string s = fmt::format(
      "set terminal pngcairo size 1200,500 noenhanced\nset output {}\n"
      "set multiplot layout 1,2 title {}\nset logscale x 2\nset grid\nset key bottom left\n"
      "set xlabel {}\n",
      launch::gnuplot_quoted(png), launch::gnuplot_quoted(title),
      launch::gnuplot_quoted(panels.xlabel));
  auto plot = [&](int column, const std::string& ylabel, bool log_y) {
    s += fmt::format("set ylabel {}\n{}", launch::gnuplot_quoted(ylabel),
                     log_y ? "set logscale y\n" : "unset logscale y\n");
    s += "plot ";
    for (size_t i = 0; i < series.size(); ++i) {
      s += fmt::format("{}{} index {} using 1:{} with linespoints lw 2 title {}", i ? ", " : "",
                       launch::gnuplot_quoted(data), i, column,
                       launch::gnuplot_quoted(series[i].label));
    }
    s += "\n";
  };
  plot(2, panels.left, panels.left_log);
  plot(3, panels.right, panels.right_log);
  return s + "unset multiplot\n";
}

}  // namespace

void write_scaling_plot(const std::string& png_path, const std::string& title,
                        const std::vector<PlotSeries>& series, const PlotPanels& panels) {
  launch::find_gnuplot(panels.what + ": --plot");  // before writing anything
  const auto dir = std::filesystem::temp_directory_path() /
                   fmt::format("tandem-plot-{}", static_cast<long>(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string data = (dir / "series.dat").string();
  const std::string plot = (dir / "plot.gp").string();
  {
    std::ofstream out(data);
    for (const PlotSeries& s : series) {
      for (const auto& p : s.points) {
        out << p.processes << ' ' << p.efficiency << ' ' << p.step_s << '\n';
      }
      out << "\n\n";  // gnuplot's data-set separator, read by `index`
    }
    std::ofstream(plot) << script(png_path, title, data, series, panels);
  }
  try {
    launch::run_gnuplot(plot, panels.what, png_path);
  } catch (...) {
    std::filesystem::remove_all(dir);
    throw;
  }
  std::filesystem::remove_all(dir);
}

}  // namespace tandem::lab
