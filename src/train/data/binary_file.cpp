#include "train/data/binary_file.h"

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>

#include "tandem/core/error.h"

namespace tandem::train::detail {

std::vector<uint8_t> read_file_bytes(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw Error(
        fmt::format("{} '{}': cannot open for reading ({})", what, path, std::strerror(errno)));
  }
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                             std::istreambuf_iterator<char>());
  if (in.bad()) throw Error(fmt::format("{} '{}': read failed", what, path));
  return bytes;
}

void write_file_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) {
    throw Error(
        fmt::format("fixture '{}': cannot open for writing ({})", path, std::strerror(errno)));
  }
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) throw Error(fmt::format("fixture '{}': write failed (disk full?)", path));
}

}  // namespace tandem::train::detail
