#include "tandem/detect/run_plots.h"

#include <ATen/ops/tensor.h>
#include <ATen/ops/zeros.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "tandem/core/error.h"
#include "tandem/detect/run_folder.h"
#include "tests/train/data/temp_dir.h"

namespace tandem::detect {
namespace {

// Class 0: two objects; detections at confidence 0.9 (hit), 0.8 (miss), 0.7
// (hit). Class 1: one detection, no object.
DetectionMetrics crafted() {
  at::Tensor tp = at::zeros({4, 10}, at::kBool);
  tp[0][0] = true;
  tp[2][0] = true;
  return DetectionMetrics::from_statistics(2, tp, at::tensor({0.9, 0.8, 0.7, 0.6}),
                                           at::tensor({0, 0, 0, 1}, at::kLong),
                                           at::tensor({0, 0}, at::kLong), 1);
}

TEST(RunPlots, PrCurveOfACraftedClass) {
  auto curve = pr_curve(crafted(), 0);
  ASSERT_EQ(curve.size(), 4u);
  EXPECT_EQ(curve[0], (std::pair<double, double>{0.0, 1.0}));
  EXPECT_EQ(curve[1], (std::pair<double, double>{0.5, 1.0}));
  EXPECT_EQ(curve[2], (std::pair<double, double>{0.5, 0.5}));
  EXPECT_DOUBLE_EQ(curve[3].first, 1.0);
  EXPECT_DOUBLE_EQ(curve[3].second, 2.0 / 3);
  EXPECT_TRUE(pr_curve(crafted(), 1).empty()) << "no ground truth, no curve";
}

TEST(RunPlots, DrawsResultsAndPrCurvePngs) {
  train::testing::TempDir dir;
  RunFolder f(dir.file("run"));
  EXPECT_THROW(plot_results(f.dir()), Error) << "no rows yet";
  for (int e = 1; e <= 3; ++e) {
    f.append_results({double(e), 1.0 / e, 2.0 / e, 1.5 / e, 0.2 * e, 0.1 * e, 0.3 * e, 0.1 * e,
                      1.1 / e, 2.1 / e, 1.6 / e, 0.01, 0.01, 0.01});
  }
  plot_results(f.dir());
  plot_pr_curve(f.dir(), crafted(), {"circle", "square"});
  plot_confusion_matrix(f.dir(), at::tensor({5, 1, 0, 0, 3, 2, 1, 0, 0}, at::kLong).view({3, 3}),
                        {"circle", "square"});
  for (const auto* png : {"results.png", "PR_curve.png", "confusion_matrix_normalized.png"}) {
    const auto path = std::filesystem::path(f.dir()) / png;
    ASSERT_TRUE(std::filesystem::exists(path)) << png;
    EXPECT_GT(std::filesystem::file_size(path), 1000u) << png;
  }
  EXPECT_FALSE(std::filesystem::exists(std::filesystem::path(f.dir()) / "results.gp"));
}

}  // namespace
}  // namespace tandem::detect
