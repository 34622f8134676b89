// The scaling plot of `tandem simulate --plot FILE.png`: scaling efficiency
// and step time against the number of processes (log scale), one line per
// strategy, drawn by gnuplot (Debian's gnuplot-nox, run as a subprocess with
// a deadline). Not thread-safe; nothing collective.
#pragma once

#include <string>
#include <vector>

namespace tandem::lab {

struct PlotSeries {
  std::string label;  // the strategy
  struct Point {
    int processes = 0;
    double efficiency = 0;
    double step_s = 0;
  };
  std::vector<Point> points;
};

// The two panels' y axes (left: PlotSeries::Point::efficiency, right:
// step_s) and the command named in errors; `tandem lab converge` draws
// other quantities on the same layout.
struct PlotPanels {
  std::string left = "scaling efficiency";
  bool left_log = false;
  std::string right = "step time (s)";
  bool right_log = true;
  std::string xlabel = "processes";
  std::string what = "simulate";
};

// Writes the PNG. Throws tandem::Error naming gnuplot when it is missing
// (install gnuplot-nox, as scripts/install-deps.sh does), fails, or runs
// past 60 s, with the tail of its output.
void write_scaling_plot(const std::string& png_path, const std::string& title,
                        const std::vector<PlotSeries>& series, const PlotPanels& panels = {});

}  // namespace tandem::lab
