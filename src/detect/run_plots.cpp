#include "tandem/detect/run_plots.h"

#include <ATen/TensorOperators.h>
#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <numeric>

#include "tandem/core/error.h"
#include "tandem/detect/run_folder.h"
#include "tandem/launch/gnuplot.h"

namespace tandem::detect {
namespace {

namespace fs = std::filesystem;
using launch::gnuplot_quoted;

constexpr const char* kWhat = "detect: plots=true";

// Writes `script` beside the figure, runs it, and removes it.
void draw(const fs::path& dir, const std::string& name, const std::string& script) {
  const fs::path gp = dir / (name + ".gp");
  std::ofstream(gp) << script;
  try {
    launch::run_gnuplot(gp.string(), kWhat, (dir / (name + ".png")).string());
  } catch (...) {
    fs::remove(gp);
    throw;
  }
  fs::remove(gp);
}

}  // namespace

void plot_results(const std::string& run_dir) {
  launch::find_gnuplot(kWhat);
  const fs::path dir(run_dir), csv = dir / "results.csv";
  if (RunFolder(run_dir).read_results().empty()) {
    throw Error(fmt::format("detect: '{}' has no rows to plot", csv.string()));
  }
  // Columns of kResultsHeader (1-based for gnuplot), in Ultralytics' panel order.
  const std::vector<std::pair<int, const char*>> panels = {
      {2, "train/box_loss"},       {3, "train/cls_loss"},    {4, "train/dfl_loss"},
      {5, "metrics/precision(B)"}, {6, "metrics/recall(B)"}, {9, "val/box_loss"},
      {10, "val/cls_loss"},        {11, "val/dfl_loss"},     {7, "metrics/mAP50(B)"},
      {8, "metrics/mAP50-95(B)"}};
  std::string s = fmt::format(
      "set terminal pngcairo size 1800,700 noenhanced\nset output {}\nset datafile separator ','\n"
      "set key off\nset grid\nset multiplot layout 2,5\nset xlabel 'epoch'\n",
      gnuplot_quoted((dir / "results.png").string()));
  for (const auto& [column, title] : panels) {
    s += fmt::format(
        "set title '{}'\nplot {} every ::1 using 1:{} with linespoints pt 7 ps 0.6 lw 2\n", title,
        gnuplot_quoted(csv.string()), column);
  }
  draw(dir, "results", s + "unset multiplot\n");
}

std::vector<std::pair<double, double>> pr_curve(const DetectionMetrics& metrics, int64_t cls) {
  const int64_t n_gt = (metrics.target_cls() == cls).sum().item<int64_t>();
  if (n_gt == 0) return {};
  const at::Tensor mine = (metrics.pred_cls() == cls).nonzero().squeeze(1);
  const at::Tensor conf = metrics.conf().index_select(0, mine).to(at::kDouble).contiguous();
  const at::Tensor tp = metrics.tp().index_select(0, mine).select(1, 0).contiguous();
  std::vector<int64_t> order(static_cast<size_t>(conf.numel()));
  std::iota(order.begin(), order.end(), 0);
  const double* c = conf.data_ptr<double>();
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return c[a] > c[b]; });
  const bool* t = tp.data_ptr<bool>();
  std::vector<std::pair<double, double>> out = {{0.0, 1.0}};
  int64_t hits = 0;
  for (size_t k = 0; k < order.size(); ++k) {
    hits += t[order[k]] ? 1 : 0;
    out.emplace_back(static_cast<double>(hits) / static_cast<double>(n_gt),
                     static_cast<double>(hits) / static_cast<double>(k + 1));
  }
  return out;
}

void plot_pr_curve(const std::string& run_dir, const DetectionMetrics& metrics,
                   const std::vector<std::string>& names) {
  launch::find_gnuplot(kWhat);
  const fs::path dir(run_dir), data = dir / "PR_curve.dat";
  const MetricsSummary summary = metrics.compute();
  std::vector<std::string> titles;
  std::vector<double> mean(101, 0.0);
  {
    std::ofstream out(data);
    for (const ClassMetrics& cm : summary.classes) {
      auto curve = pr_curve(metrics, cm.cls);
      // The precision envelope on 101 recall points, for the mean curve.
      for (int r = 0; r <= 100; ++r) {
        double best = 0;
        for (const auto& [rec, prec] : curve) {
          if (rec >= r / 100.0 - 1e-12) best = std::max(best, prec);
        }
        mean[r] += best / static_cast<double>(summary.classes.size());
      }
      for (const auto& [rec, prec] : curve) out << rec << ' ' << prec << '\n';
      out << "\n\n";
      const std::string name =
          cm.cls < static_cast<int64_t>(names.size()) ? names[cm.cls] : std::to_string(cm.cls);
      titles.push_back(fmt::format("{} {:.3f}", name, cm.ap50));
    }
    for (int r = 0; r <= 100; ++r) out << r / 100.0 << ' ' << mean[r] << '\n';
  }
  std::string s = fmt::format(
      "set terminal pngcairo size 900,700 noenhanced\nset output {}\nset xlabel 'Recall'\n"
      "set ylabel 'Precision'\nset xrange [0:1]\nset yrange [0:1.02]\nset grid\n"
      "set key bottom left\nplot ",
      gnuplot_quoted((dir / "PR_curve.png").string()));
  for (size_t i = 0; i < titles.size(); ++i) {
    s += fmt::format("{} index {} using 1:2 with lines lw 1 title {}, ",
                     gnuplot_quoted(data.string()), i, gnuplot_quoted(titles[i]));
  }
  s += fmt::format("{} index {} using 1:2 with lines lw 3 lc rgb 'blue' title {}\n",
                   gnuplot_quoted(data.string()), titles.size(),
                   gnuplot_quoted(fmt::format("all classes {:.3f} mAP@0.5", summary.map50)));
  try {
    draw(dir, "PR_curve", s);
  } catch (...) {
    fs::remove(data);
    throw;
  }
  fs::remove(data);
}

void plot_confusion_matrix(const std::string& run_dir, const at::Tensor& matrix,
                           const std::vector<std::string>& names) {
  launch::find_gnuplot(kWhat);
  const fs::path dir(run_dir);
  const int64_t n = matrix.size(0);
  const at::Tensor m = matrix.to(at::kDouble);
  const at::Tensor norm = m / m.sum(0, true).clamp_min(1);  // each true class's column sums to 1
  std::vector<std::string> labels;
  for (int64_t i = 0; i + 1 < n; ++i) {
    labels.push_back(i < static_cast<int64_t>(names.size()) ? names[i] : std::to_string(i));
  }
  labels.push_back("background");
  std::string tics;
  for (int64_t i = 0; i < n; ++i) {
    tics += fmt::format("{}{} {}", i ? ", " : "", gnuplot_quoted(labels[i]), i);
  }
  std::string s = fmt::format(
      "set terminal pngcairo size 900,800 noenhanced\nset output {}\n"
      "set title 'Confusion matrix (normalised per true class)'\nset xlabel 'True'\n"
      "set ylabel 'Predicted'\nset xtics ({}) rotate by 45 right\nset ytics ({})\n"
      "set xrange [-0.5:{}]\nset yrange [{}:-0.5]\nset cbrange [0:1]\n"
      "set palette defined (0 'white', 1 '#08306b')\nunset key\n",
      gnuplot_quoted((dir / "confusion_matrix_normalized.png").string()), tics, tics, n - 0.5,
      n - 0.5);
  // Rows of the image are predicted classes (y), columns true classes (x).
  s += "$M << EOD\n";
  for (int64_t p = 0; p < n; ++p) {
    for (int64_t t = 0; t < n; ++t)
      s += fmt::format("{} {} {:.4f}\n", t, p, norm[p][t].item<double>());
    s += "\n";
  }
  s += "EOD\nplot $M using 1:2:3 with image, $M using 1:2:($3 > 0.005 ? sprintf('%.2f', $3) : '') "
       "with labels textcolor rgb '#c00000'\n";
  draw(dir, "confusion_matrix_normalized", s);
}

}  // namespace tandem::detect
