#include "tandem/detect/detection_metrics.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "tandem/core/check.h"
#include "tandem/detect/box_ops.h"

namespace tandem::detect {
namespace {

// Ultralytics' confidence grid for the P, R and F1 curves.
constexpr int kCurvePoints = 1000;

// numpy.interp for increasing xp, with `left` below xp[0] and fp.back() above.
double interp(double x, const std::vector<double>& xp, const std::vector<double>& fp, double left) {
  if (xp.empty()) return left;
  if (x < xp.front()) return left;
  if (x >= xp.back()) return fp.back();
  auto it = std::upper_bound(xp.begin(), xp.end(), x);
  const size_t j = static_cast<size_t>(it - xp.begin());
  const double x0 = xp[j - 1], x1 = xp[j];
  const double t = x1 == x0 ? 0 : (x - x0) / (x1 - x0);
  return fp[j - 1] + t * (fp[j] - fp[j - 1]);
}

// Ultralytics' smooth(): a box filter over 2 * 10% of the points, padded by
// repeating the ends.
std::vector<double> smooth(const std::vector<double>& y, double fraction = 0.1) {
  const int64_t nf = static_cast<int64_t>(std::round(y.size() * fraction * 2)) / 2 + 1;
  std::vector<double> padded(nf / 2, y.front());
  padded.insert(padded.end(), y.begin(), y.end());
  padded.insert(padded.end(), nf / 2, y.back());
  std::vector<double> out(y.size());
  for (size_t i = 0; i < y.size(); ++i) {
    out[i] = std::accumulate(padded.begin() + i, padded.begin() + i + nf, 0.0) / nf;
  }
  return out;
}

}  // namespace

const std::vector<double>& iou_thresholds() {
  static const std::vector<double> t = {0.50, 0.55, 0.60, 0.65, 0.70, 0.75, 0.80, 0.85, 0.90, 0.95};
  return t;
}

double average_precision(const std::vector<double>& recall, const std::vector<double>& precision) {
  TANDEM_CHECK(recall.size() == precision.size(),
               "average_precision: {} recall values but {} precision values", recall.size(),
               precision.size());
  // Precision envelope: the best precision at this recall or beyond.
  std::vector<double> env(precision);
  for (size_t i = env.size(); i-- > 1;) env[i - 1] = std::max(env[i - 1], env[i]);
  double sum = 0;
  for (int k = 0; k <= 100; ++k) {
    const double r = k / 100.0;
    auto it = std::lower_bound(recall.begin(), recall.end(), r - 1e-12);
    if (it != recall.end()) sum += env[static_cast<size_t>(it - recall.begin())];
  }
  return sum / 101.0;
}

at::Tensor match_predictions(const at::Tensor& pred_classes, const at::Tensor& true_classes,
                             const at::Tensor& iou) {
  const int64_t n = pred_classes.size(0), m = true_classes.size(0);
  TANDEM_CHECK(iou.dim() == 2 && iou.size(0) == m && iou.size(1) == n,
               "match_predictions: iou must be [{} ground truth, {} predictions], got [{}]", m, n,
               fmt::join(iou.sizes(), ", "));
  const auto& thresholds = iou_thresholds();
  auto correct = at::zeros({n, static_cast<int64_t>(thresholds.size())}, at::kBool);
  auto pc = pred_classes.to(at::kCPU, at::kLong).contiguous();
  auto tc = true_classes.to(at::kCPU, at::kLong).contiguous();
  auto io = iou.to(at::kCPU, at::kDouble).contiguous();
  auto pa = pc.accessor<int64_t, 1>();
  auto ta = tc.accessor<int64_t, 1>();
  auto ia = io.accessor<double, 2>();
  auto ca = correct.accessor<bool, 2>();
  struct Pair {
    double iou;
    int64_t gt, pred;
  };
  std::vector<Pair> pairs;
  for (int64_t g = 0; g < m; ++g) {
    for (int64_t p = 0; p < n; ++p) {
      if (ta[g] == pa[p] && ia[g][p] >= thresholds.front()) pairs.push_back({ia[g][p], g, p});
    }
  }
  std::stable_sort(pairs.begin(), pairs.end(),
                   [](const Pair& a, const Pair& b) { return a.iou > b.iou; });
  for (size_t t = 0; t < thresholds.size(); ++t) {
    std::vector<bool> gt_used(m, false), pred_used(n, false);
    for (const auto& pr : pairs) {
      if (pr.iou < thresholds[t]) break;
      if (gt_used[pr.gt] || pred_used[pr.pred]) continue;
      gt_used[pr.gt] = pred_used[pr.pred] = true;
      ca[pr.pred][t] = true;
    }
  }
  return correct;
}

DetectionMetrics::DetectionMetrics(int64_t num_classes)
    : num_classes_(num_classes),
      tp_(at::empty({0, static_cast<int64_t>(iou_thresholds().size())}, at::kBool)),
      conf_(at::empty({0}, at::kDouble)),
      pred_cls_(at::empty({0}, at::kLong)),
      target_cls_(at::empty({0}, at::kLong)) {
  TANDEM_CHECK(num_classes >= 1, "DetectionMetrics: num_classes must be at least 1, got {}",
               num_classes);
}

void DetectionMetrics::update(const at::Tensor& detections, const at::Tensor& gt_boxes,
                              const at::Tensor& gt_classes) {
  TANDEM_CHECK(detections.dim() == 2 && detections.size(1) == 6,
               "DetectionMetrics::update: detections must be [n, 6], got [{}]",
               fmt::join(detections.sizes(), ", "));
  TANDEM_CHECK(gt_boxes.dim() == 2 && gt_boxes.size(1) == 4 && gt_classes.dim() == 1 &&
                   gt_classes.size(0) == gt_boxes.size(0),
               "DetectionMetrics::update: ground truth must be boxes [m, 4] and classes [m], got "
               "[{}] and [{}]",
               fmt::join(gt_boxes.sizes(), ", "), fmt::join(gt_classes.sizes(), ", "));
  ++images_;
  auto det = detections.detach().to(at::kCPU, at::kDouble);
  auto gtb = gt_boxes.detach().to(at::kCPU, at::kDouble);
  auto gtc = gt_classes.detach().to(at::kCPU).to(at::kLong);
  target_cls_ = at::cat({target_cls_, gtc});
  if (det.size(0) == 0) return;
  auto pred_cls = det.select(1, 5).to(at::kLong);
  at::Tensor correct;
  if (gtb.size(0) == 0) {
    correct = at::zeros({det.size(0), tp_.size(1)}, at::kBool);
  } else {
    correct = match_predictions(pred_cls, gtc, box_iou(gtb, det.narrow(1, 0, 4)));
  }
  tp_ = at::cat({tp_, correct});
  conf_ = at::cat({conf_, det.select(1, 4)});
  pred_cls_ = at::cat({pred_cls_, pred_cls});
}

void DetectionMetrics::merge(const DetectionMetrics& other) {
  TANDEM_CHECK(other.num_classes_ == num_classes_,
               "DetectionMetrics::merge: {} classes here but {} in the other", num_classes_,
               other.num_classes_);
  tp_ = at::cat({tp_, other.tp_});
  conf_ = at::cat({conf_, other.conf_});
  pred_cls_ = at::cat({pred_cls_, other.pred_cls_});
  target_cls_ = at::cat({target_cls_, other.target_cls_});
  images_ += other.images_;
}

DetectionMetrics DetectionMetrics::from_statistics(int64_t num_classes, const at::Tensor& tp,
                                                   const at::Tensor& conf,
                                                   const at::Tensor& pred_cls,
                                                   const at::Tensor& target_cls, int64_t images) {
  DetectionMetrics m(num_classes);
  const int64_t n = tp.size(0);
  TANDEM_CHECK(tp.dim() == 2 && tp.size(1) == m.tp_.size(1) && conf.numel() == n &&
                   pred_cls.numel() == n && target_cls.dim() == 1 && images >= 0,
               "DetectionMetrics::from_statistics: tp [{}], conf [{}], pred_cls [{}] and "
               "target_cls [{}] do not fit together (want [n, {}], [n], [n], [m])",
               fmt::join(tp.sizes(), ", "), fmt::join(conf.sizes(), ", "),
               fmt::join(pred_cls.sizes(), ", "), fmt::join(target_cls.sizes(), ", "),
               m.tp_.size(1));
  m.tp_ = tp.to(at::kBool);
  m.conf_ = conf.reshape({-1}).to(at::kDouble);
  m.pred_cls_ = pred_cls.reshape({-1}).to(at::kLong);
  m.target_cls_ = target_cls.to(at::kLong);
  m.images_ = images;
  return m;
}

MetricsSummary DetectionMetrics::compute() const {
  MetricsSummary s;
  s.images = images_;
  s.instances = target_cls_.size(0);
  const int64_t n = conf_.size(0), thresholds = tp_.size(1);
  auto order = conf_.argsort(0, /*descending=*/true);
  auto conf = conf_.index_select(0, order).contiguous();
  auto cls = pred_cls_.index_select(0, order).contiguous();
  auto tp = tp_.index_select(0, order).contiguous();
  auto ca = conf.accessor<double, 1>();
  auto pa = cls.accessor<int64_t, 1>();
  auto ta = tp.accessor<bool, 2>();
  std::vector<int64_t> instances(num_classes_, 0);
  auto tc = target_cls_.contiguous();
  for (int64_t i = 0; i < tc.size(0); ++i) {
    const int64_t c = tc.data_ptr<int64_t>()[i];
    if (c >= 0 && c < num_classes_) ++instances[c];
  }
  std::vector<std::vector<double>> p_curve, r_curve;
  for (int64_t c = 0; c < num_classes_; ++c) {
    if (instances[c] == 0) continue;
    ClassMetrics m;
    m.cls = c;
    m.instances = instances[c];
    std::vector<double> neg_conf;
    std::vector<std::vector<double>> recall(thresholds), precision(thresholds);
    std::vector<int64_t> tpc(thresholds, 0);
    int64_t seen = 0;
    for (int64_t i = 0; i < n; ++i) {
      if (pa[i] != c) continue;
      ++seen;
      neg_conf.push_back(-ca[i]);
      for (int64_t t = 0; t < thresholds; ++t) {
        tpc[t] += ta[i][t] ? 1 : 0;
        recall[t].push_back(static_cast<double>(tpc[t]) / (instances[c] + 1e-16));
        precision[t].push_back(static_cast<double>(tpc[t]) / seen);
      }
    }
    std::vector<double> pc(kCurvePoints, 0.0), rc(kCurvePoints, 0.0);
    if (seen > 0) {
      double ap_sum = 0;
      for (int64_t t = 0; t < thresholds; ++t) {
        const double ap = average_precision(recall[t], precision[t]);
        if (t == 0) m.ap50 = ap;
        ap_sum += ap;
      }
      m.ap50_95 = ap_sum / thresholds;
      for (int k = 0; k < kCurvePoints; ++k) {
        const double x = -static_cast<double>(k) / (kCurvePoints - 1);
        rc[k] = interp(x, neg_conf, recall[0], 0.0);
        pc[k] = interp(x, neg_conf, precision[0], 1.0);
      }
    }
    p_curve.push_back(pc);
    r_curve.push_back(rc);
    s.classes.push_back(m);
  }
  if (s.classes.empty()) return s;
  std::vector<double> mean_f1(kCurvePoints, 0.0);
  for (size_t c = 0; c < s.classes.size(); ++c) {
    for (int k = 0; k < kCurvePoints; ++k) {
      const double p = p_curve[c][k], r = r_curve[c][k];
      mean_f1[k] += 2 * p * r / (p + r + 1e-16) / static_cast<double>(s.classes.size());
    }
  }
  auto smoothed = smooth(mean_f1);
  const size_t best =
      static_cast<size_t>(std::max_element(smoothed.begin(), smoothed.end()) - smoothed.begin());
  for (size_t c = 0; c < s.classes.size(); ++c) {
    auto& m = s.classes[c];
    m.precision = p_curve[c][best];
    m.recall = r_curve[c][best];
    const double k = static_cast<double>(s.classes.size());
    s.precision += m.precision / k;
    s.recall += m.recall / k;
    s.map50 += m.ap50 / k;
    s.map50_95 += m.ap50_95 / k;
  }
  return s;
}

std::string metrics_table(const MetricsSummary& s, const std::vector<std::string>& names,
                          bool per_class) {
  std::string out = fmt::format("{:>22}{:>11}{:>11}{:>11}{:>11}{:>11}{:>11}\n", "Class", "Images",
                                "Instances", "Box(P", "R", "mAP50", "mAP50-95)");
  auto row = [&](const std::string& name, int64_t images, int64_t instances, double p, double r,
                 double m50, double m) {
    out += fmt::format("{:>22}{:>11}{:>11}{:>11.3f}{:>11.3f}{:>11.3f}{:>11.3f}\n", name, images,
                       instances, p, r, m50, m);
  };
  row("all", s.images, s.instances, s.precision, s.recall, s.map50, s.map50_95);
  if (per_class) {
    for (const auto& c : s.classes) {
      const std::string name =
          c.cls < static_cast<int64_t>(names.size()) ? names[c.cls] : std::to_string(c.cls);
      row(name, s.images, c.instances, c.precision, c.recall, c.ap50, c.ap50_95);
    }
  }
  return out;
}

}  // namespace tandem::detect
