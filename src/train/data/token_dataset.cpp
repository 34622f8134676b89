#include "tandem/train/data/token_dataset.h"

#include <ATen/ops/empty.h>

#include "tandem/core/check.h"
#include "train/data/binary_file.h"

namespace tandem::train {

TokenDataset::TokenDataset(const std::string& path, int64_t context, int64_t vocab_size)
    : path_(path), context_(context) {
  TANDEM_CHECK(context >= 1, "token file '{}': context must be at least 1 (got {})", path, context);
  TANDEM_CHECK(vocab_size >= 1 && vocab_size <= 65536,
               "token file '{}': vocab_size must be in [1, 65536] (got {})", path, vocab_size);
  const auto bytes = detail::read_file_bytes(path, "token file");
  if (bytes.size() % 2 != 0) {
    throw Error(
        fmt::format("token file '{}': size mismatch: {} bytes is odd, but tokens are "
                    "2-byte uint16 (truncated?)",
                    path, bytes.size()));
  }
  const auto n = static_cast<int64_t>(bytes.size() / 2);
  if (n < context + 1) {
    throw Error(
        fmt::format("token file '{}': holds {} tokens, shorter than one window of "
                    "context + 1 = {} tokens",
                    path, n, context + 1));
  }
  tokens_.resize(static_cast<size_t>(n));
  for (size_t i = 0; i < tokens_.size(); ++i) {
    tokens_[i] = static_cast<uint16_t>(bytes[2 * i] | (bytes[2 * i + 1] << 8));
    if (tokens_[i] >= vocab_size) {
      throw Error(
          fmt::format("token file '{}': token {} is {}, outside the vocabulary of {} "
                      "(ids 0-{}); was it written for another model?",
                      path, i, tokens_[i], vocab_size, vocab_size - 1));
    }
  }
}

Example TokenDataset::get(int64_t index) const {
  detail::check_index(*this, index);
  at::Tensor input = at::empty({context_}, at::kLong);
  at::Tensor target = at::empty({context_}, at::kLong);
  auto* in = input.data_ptr<int64_t>();
  auto* out = target.data_ptr<int64_t>();
  const uint16_t* window = tokens_.data() + index;
  for (int64_t t = 0; t < context_; ++t) {
    in[t] = window[t];
    out[t] = window[t + 1];
  }
  return {input, target};
}

std::string TokenDataset::describe() const {
  return fmt::format("token file '{}' ({} tokens, context {})", path_, tokens_.size(), context_);
}

}  // namespace tandem::train
