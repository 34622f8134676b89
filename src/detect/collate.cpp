#include "tandem/detect/collate.h"

#include <ATen/ops/cat.h>
#include <ATen/ops/full.h>
#include <ATen/ops/stack.h>

#include "tandem/core/check.h"

namespace tandem::detect {

DetectionBatch collate(std::vector<DetectionSample> samples) {
  TANDEM_CHECK(!samples.empty(), "collate: no samples");
  DetectionBatch batch;
  std::vector<at::Tensor> images, targets;
  const std::vector<int64_t> first_shape = samples[0].image.sizes().vec();
  for (size_t i = 0; i < samples.size(); ++i) {
    auto& s = samples[i];
    TANDEM_CHECK(s.image.sizes() == at::IntArrayRef(first_shape),
                 "collate: sample {} ('{}') is [{}] but sample 0 is [{}]; all samples of a batch "
                 "need the same imgsz",
                 i, s.path, fmt::join(s.image.sizes(), ", "), fmt::join(first_shape, ", "));
    images.push_back(s.image);
    const int64_t n = s.labels.size(0);
    targets.push_back(
        at::cat({at::full({n, 1}, static_cast<double>(i), s.labels.options()), s.labels}, 1));
    batch.paths.push_back(s.path);
    s.image = at::Tensor();
    batch.meta.push_back(std::move(s));
  }
  batch.images = at::stack(images);
  batch.targets = at::cat(targets, 0);
  return batch;
}

}  // namespace tandem::detect
