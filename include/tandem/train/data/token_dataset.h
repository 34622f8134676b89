// TokenDataset: a language-model corpus stored as raw little-endian uint16
// tokens (the nanoGPT / llm.c ".bin" layout without a header). Sample i is the
// window starting at token i: input = tokens[i, i+T), target = tokens[i+1,
// i+T] for context length T, so there are (tokens - T) samples. The file is
// read whole at construction. Immutable afterwards, so thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tandem/train/data/dataset.h"

namespace tandem::train {

class TokenDataset : public Dataset {
 public:
  // Reads the file; token ids must lie in [0, vocab_size) (the model's
  // vocabulary; the default admits every uint16). Throws
  // tandem::InvalidArgument if context < 1 or vocab_size is outside [1,
  // 65536], and tandem::Error naming the file for a missing file, an odd
  // byte count (truncated token), fewer than context + 1 tokens, or a token
  // id >= vocab_size (naming its index and value).
  TokenDataset(const std::string& path, int64_t context, int64_t vocab_size = 65536);

  int64_t size() const override { return static_cast<int64_t>(tokens_.size()) - context_; }
  // input and target: int64 [context].
  Example get(int64_t index) const override;
  std::string describe() const override;

  int64_t context() const { return context_; }
  int64_t num_tokens() const { return static_cast<int64_t>(tokens_.size()); }

 private:
  std::string path_;
  int64_t context_;
  std::vector<uint16_t> tokens_;
};

}  // namespace tandem::train
