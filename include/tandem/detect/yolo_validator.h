// Validation of a detector on a data set, sharded over the ranks: rank r
// evaluates images r, r + W, r + 2W, ... (letterboxed, no augmentation),
// runs NMS (confidence 0.001, IoU 0.7) and the loss, then the ranks gather
// their statistics so that every rank returns the metrics and mean losses
// of the whole set, as one process evaluating it alone would.
// Collective over `comm` when it has more than one rank (a few all-reduces
// and all-gathers at the end, none per batch). Not thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <memory>

#include "tandem/comm/communicator.h"
#include "tandem/detect/detection_dataset.h"
#include "tandem/detect/detection_loader.h"
#include "tandem/detect/detection_loss.h"
#include "tandem/detect/detection_metrics.h"
#include "tandem/detect/yolo_model.h"

namespace tandem::detect {

struct ValResult {
  MetricsSummary metrics;
  std::array<double, 3> loss{};  // box, cls, dfl: the mean over batches
  double fitness = 0;            // 0.1 mAP50 + 0.9 mAP50-95
  // The whole set's statistics (every rank's, gathered), for the PR curve.
  std::shared_ptr<const DetectionMetrics> statistics;
  // ConfusionMatrix::matrix() of the whole set (rows predicted, columns
  // true, the last of each the background).
  at::Tensor confusion;
};

// Ultralytics' fitness of a run: 0.1 mAP50 + 0.9 mAP50-95.
double fitness_of(const MetricsSummary& s);

// Evaluates `model` (put in eval mode, in its own dtype) on `data` in batches
// of `batch` images per rank; `comm` null or of size 1 evaluates everything
// here. `loader` sets the threads that prepare the next batches
// (detection_loader.h; the default prepares them on this thread). Throws
// tandem::InvalidArgument for batch < 1, and what DetectionLoader::next
// throws for a file that cannot be read any more.
ValResult validate_yolo(YoloModelImpl& model, const DetectionDataset& data, int64_t batch,
                        const DetectionLoss& loss, const std::shared_ptr<Communicator>& comm,
                        const LoaderOptions& loader = {});

}  // namespace tandem::detect
