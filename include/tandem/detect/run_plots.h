// The figures of a detection run folder, drawn by gnuplot (a subprocess,
// launch/gnuplot.h), as Ultralytics names them:
//   results.png    the columns of results.csv against the epoch (train and
//                  val box/cls/dfl losses, precision, recall, mAP50,
//                  mAP50-95)
//   PR_curve.png   precision against recall at IoU 0.5 per class, and the
//                  mean over classes, from the last validation
//   confusion_matrix_normalized.png   ConfusionMatrix's counts, each true
//                  class's column divided by its sum
// Not collective; not thread-safe for two writers of one folder.
#pragma once

#include <string>
#include <vector>

#include "tandem/detect/detection_metrics.h"

namespace tandem::detect {

// Writes run_dir/results.png from run_dir/results.csv. Throws tandem::Error
// when gnuplot is missing or fails (naming the file), or when results.csv
// has no rows.
void plot_results(const std::string& run_dir);

// Precision-recall points at IoU 0.5 of class `cls` (by descending
// confidence): (recall, precision) pairs; empty when the class has no
// ground truth.
std::vector<std::pair<double, double>> pr_curve(const DetectionMetrics& metrics, int64_t cls);

// Writes run_dir/PR_curve.png from `metrics` (one line per class with
// ground truth, named from `names`, and their mean). Throws as plot_results.
void plot_pr_curve(const std::string& run_dir, const DetectionMetrics& metrics,
                   const std::vector<std::string>& names);

// Writes run_dir/confusion_matrix_normalized.png from `matrix` (see
// confusion_matrix.h), with `names` and "background". Throws as plot_results.
void plot_confusion_matrix(const std::string& run_dir, const at::Tensor& matrix,
                           const std::vector<std::string>& names);

}  // namespace tandem::detect
