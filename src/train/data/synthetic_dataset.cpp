#include "tandem/train/data/synthetic_dataset.h"

#include <ATen/ops/empty.h>

#include "tandem/core/check.h"
#include "train/data/portable_random.h"

namespace tandem::train {
namespace {

// The seed of the sample draws: the split's stream is folded in, the class
// patterns (seeded by options.seed alone) are not.
uint64_t sample_seed(const SyntheticOptions& o) {
  return o.seed ^ (o.stream * 0x9E3779B97F4A7C15ull);
}

constexpr int64_t kClasses = 10;
// Class patterns are constant over cells of kCell x kCell pixels, so they
// look like coarse shapes a convolution can pick up, not per-pixel noise.
constexpr int64_t kCell = 4;
// Token streams restart at a random token every kTokenChunk positions, which
// bounds the work to compute any one position.
constexpr int64_t kTokenChunk = 64;
// Salts keep the pattern, sample and token streams of one seed independent.
constexpr uint64_t kPatternSalt = 0x5041545445524E53ULL;
constexpr uint64_t kTokenSalt = 0x544F4B454E53ULL;

struct ImageShape {
  int64_t channels, height, width;
};

ImageShape image_shape(SyntheticKind kind) {
  return kind == SyntheticKind::kMnist ? ImageShape{1, 28, 28} : ImageShape{3, 32, 32};
}

const char* kind_name(SyntheticKind kind) {
  switch (kind) {
    case SyntheticKind::kMnist:
      return "synthetic-mnist";
    case SyntheticKind::kCifar:
      return "synthetic-cifar";
    case SyntheticKind::kTokens:
      return "synthetic-tokens";
  }
  return "synthetic";
}

int64_t default_size(SyntheticKind kind) {
  switch (kind) {
    case SyntheticKind::kMnist:
      return 60000;
    case SyntheticKind::kCifar:
      return 50000;
    case SyntheticKind::kTokens:
      return 1000000;
  }
  return 0;
}

void validate(const SyntheticOptions& o) {
  const char* name = kind_name(o.kind);
  TANDEM_CHECK(o.size >= 0, "{}: size must be non-negative (got {}; 0 picks the default)", name,
               o.size);
  TANDEM_CHECK(o.noise >= 0.0 && o.noise <= 1.0, "{}: noise must be in [0, 1] (got {})", name,
               o.noise);
  if (o.kind == SyntheticKind::kTokens) {
    TANDEM_CHECK(o.context >= 1, "{}: context must be at least 1 (got {})", name, o.context);
    TANDEM_CHECK(o.vocab_size >= 2 && o.vocab_size <= 65536,
                 "{}: vocab_size must be in [2, 65536] (got {})", name, o.vocab_size);
  }
}

// Per-class coarse patterns, [kClasses, C*H*W], drawn from the seed alone.
std::vector<float> make_patterns(const SyntheticOptions& o) {
  const ImageShape s = image_shape(o.kind);
  const int64_t cells_h = (s.height + kCell - 1) / kCell;
  const int64_t cells_w = (s.width + kCell - 1) / kCell;
  std::vector<float> patterns(static_cast<size_t>(kClasses * s.channels * s.height * s.width));
  size_t out = 0;
  for (int64_t c = 0; c < kClasses; ++c) {
    detail::Xoshiro256 rng(detail::mix_seed(o.seed ^ kPatternSalt, static_cast<uint64_t>(c)));
    std::vector<float> cells(static_cast<size_t>(s.channels * cells_h * cells_w));
    for (auto& v : cells) v = rng.uniform_float();
    for (int64_t ch = 0; ch < s.channels; ++ch) {
      for (int64_t h = 0; h < s.height; ++h) {
        for (int64_t w = 0; w < s.width; ++w) {
          patterns[out++] =
              cells[static_cast<size_t>((ch * cells_h + h / kCell) * cells_w + w / kCell)];
        }
      }
    }
  }
  return patterns;
}

}  // namespace

SyntheticDataset::SyntheticDataset(const SyntheticOptions& options) : options_(options) {
  validate(options_);
  size_ = options_.size > 0 ? options_.size : default_size(options_.kind);
  if (options_.kind != SyntheticKind::kTokens) patterns_ = make_patterns(options_);
}

Example SyntheticDataset::get(int64_t index) const {
  detail::check_index(*this, index);
  if (options_.kind != SyntheticKind::kTokens) return get_image(index);
  at::Tensor window = token_stream(options_, index, options_.context + 1);
  return {window.narrow(0, 0, options_.context).clone(),
          window.narrow(0, 1, options_.context).clone()};
}

Example SyntheticDataset::get_image(int64_t index) const {
  const ImageShape s = image_shape(options_.kind);
  detail::Xoshiro256 rng(detail::mix_seed(sample_seed(options_), static_cast<uint64_t>(index)));
  const auto label = static_cast<int64_t>(rng.below(kClasses));
  const int64_t numel = s.channels * s.height * s.width;
  at::Tensor image = at::empty({s.channels, s.height, s.width}, at::kFloat);
  float* pixels = image.data_ptr<float>();
  const float* pattern = patterns_.data() + label * numel;
  const auto noise = static_cast<float>(options_.noise);
  for (int64_t p = 0; p < numel; ++p) {
    pixels[p] = (1.0f - noise) * pattern[p] + noise * rng.uniform_float();
  }
  at::Tensor target = at::empty({}, at::kLong);
  target.data_ptr<int64_t>()[0] = label;
  return {image, target};
}

at::Tensor SyntheticDataset::token_stream(const SyntheticOptions& options, int64_t first,
                                          int64_t count) {
  TANDEM_CHECK(first >= 0 && count >= 0,
               "synthetic-tokens: stream range needs first >= 0 and count >= 0 (got {}, {})", first,
               count);
  validate(options);
  const auto vocab = static_cast<uint64_t>(options.vocab_size);
  at::Tensor out = at::empty({count}, at::kLong);
  int64_t* tokens = out.data_ptr<int64_t>();
  uint64_t token = 0;
  // Walk from the start of first's chunk so that every position sees the same
  // predecessor whichever window asks for it.
  for (int64_t p = first - first % kTokenChunk; p < first + count; ++p) {
    detail::Xoshiro256 rng(
        detail::mix_seed(sample_seed(options) ^ kTokenSalt, static_cast<uint64_t>(p)));
    const bool random = p % kTokenChunk == 0 || rng.uniform_float() < options.noise;
    const uint64_t draw = rng.below(vocab);
    token = random ? draw : (5 * token + 3) % vocab;
    if (p >= first) tokens[p - first] = static_cast<int64_t>(token);
  }
  return out;
}

std::string SyntheticDataset::describe() const {
  return fmt::format("{} (seed {}, {} samples)", kind_name(options_.kind), options_.seed, size_);
}

}  // namespace tandem::train
