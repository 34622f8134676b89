// Batches of detection samples, in the layout the loss and the metrics read:
// images stacked, and every object of the batch in one table that names the
// image it belongs to. Thread-safe: a plain function.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "tandem/detect/detection_dataset.h"

namespace tandem::detect {

struct DetectionBatch {
  at::Tensor images;   // float32 [B, 3, H, W]
  at::Tensor targets;  // float32 [N, 6]: batch_idx, class, x, y, w, h (normalised)
  std::vector<std::string> paths;
  std::vector<DetectionSample> meta;  // the samples, images dropped (letterbox, sizes)
};

// Stacks `samples` into a batch. Throws tandem::InvalidArgument for an empty
// list or samples of different image sizes.
DetectionBatch collate(std::vector<DetectionSample> samples);

}  // namespace tandem::detect
