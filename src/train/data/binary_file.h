// Whole-file binary reads and writes for the data formats, with errors that
// name the file.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tandem::train::detail {

// The bytes of `path`. Throws tandem::Error "<what> '<path>': cannot open
// ..." if it cannot be read.
std::vector<uint8_t> read_file_bytes(const std::string& path, const std::string& what);

// Replaces `path` with `bytes`; throws tandem::Error naming the file.
void write_file_bytes(const std::string& path, const std::vector<uint8_t>& bytes);

inline uint32_t read_be_u32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

inline void append_be_u32(std::vector<uint8_t>& out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<uint8_t>(v >> shift));
}

}  // namespace tandem::train::detail
