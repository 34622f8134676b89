#include "detect/image_store.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <thread>

#include "detect/augment.h"
#include "detect/cv_tensor.h"
#include "tandem/core/check.h"
#include "tandem/core/error.h"
#include "tandem/core/log.h"

namespace tandem::detect::detail {
namespace {

namespace fs = std::filesystem;

constexpr char kNpyMagic[] = "\x93NUMPY";  // then version 1.0

std::string npy_header(int rows, int cols) {
  std::string dict =
      fmt::format("{{'descr': '|u1', 'fortran_order': False, 'shape': ({}, {}, 3), }}", rows, cols);
  // Magic (6), version (2), length (2), dict, padded with spaces to a
  // multiple of 64 bytes that ends in '\n', as NumPy writes it.
  const size_t total = (10 + dict.size() + 1 + 63) / 64 * 64;
  dict.append(total - 10 - dict.size() - 1, ' ');
  dict += '\n';
  std::string out(kNpyMagic, 6);
  out += '\x01';
  out += '\x00';
  out += static_cast<char>(dict.size() & 0xff);
  out += static_cast<char>(dict.size() >> 8);
  return out + dict;
}

// The .npy is usable when it is at least as new as the image.
bool fresh(const std::string& npy, const std::string& image) {
  std::error_code e1, e2;
  const auto t_npy = fs::last_write_time(npy, e1);
  const auto t_image = fs::last_write_time(image, e2);
  return !e1 && !e2 && t_npy >= t_image;
}

}  // namespace

std::string npy_path(const std::string& image) { return image + ".npy"; }

void write_npy(const std::string& path, const cv::Mat& bgr) {
  TANDEM_ASSERT(bgr.type() == CV_8UC3, "write_npy: expected an 8-bit BGR image");
  const cv::Mat c = bgr.isContinuous() ? bgr : bgr.clone();
  const std::string tmp = fmt::format("{}.tmp{}.{}", path, ::getpid(),
                                      std::hash<std::thread::id>{}(std::this_thread::get_id()));
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    const std::string header = npy_header(c.rows, c.cols);
    out.write(header.data(), static_cast<std::streamsize>(header.size()));
    out.write(reinterpret_cast<const char*>(c.data), static_cast<std::streamsize>(c.total() * 3));
    if (!out.good()) {
      std::error_code ec;
      fs::remove(tmp, ec);
      throw Error(fmt::format("cache=disk: cannot write '{}'", tmp));
    }
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp, ec);
    throw Error(fmt::format("cache=disk: cannot write '{}' ({})", path, ec.message()));
  }
}

cv::Mat read_npy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char head[10];
  if (!in.read(head, 10) || std::string(head, 6) != std::string(kNpyMagic, 6) || head[6] != 1) {
    return {};
  }
  const size_t length = static_cast<unsigned char>(head[8]) |
                        (static_cast<size_t>(static_cast<unsigned char>(head[9])) << 8);
  std::string dict(length, '\0');
  if (!in.read(dict.data(), static_cast<std::streamsize>(length))) return {};
  int rows = 0, cols = 0;
  const size_t shape = dict.find("'shape': (");
  if (dict.find("'descr': '|u1'") == std::string::npos ||
      dict.find("'fortran_order': False") == std::string::npos || shape == std::string::npos ||
      std::sscanf(dict.c_str() + shape, "'shape': (%d, %d, 3)", &rows, &cols) != 2 || rows < 1 ||
      cols < 1) {
    return {};
  }
  cv::Mat out(rows, cols, CV_8UC3);
  if (!in.read(reinterpret_cast<char*>(out.data), static_cast<std::streamsize>(out.total() * 3))) {
    return {};
  }
  return out;
}

ImageStore::ImageStore(std::vector<std::string> paths, int size, bool augment, ImageCache cache)
    : paths_(std::move(paths)), size_(size), augment_(augment), cache_(cache) {
  if (cache_ == ImageCache::kRam) ram_.resize(paths_.size());
}

cv::Mat ImageStore::decode(int64_t index) const {
  const std::string& image = paths_[index];
  if (cache_ != ImageCache::kDisk) return read_bgr(image);
  const std::string npy = npy_path(image);
  if (fresh(npy, image)) {
    cv::Mat cached = read_npy(npy);
    if (!cached.empty()) return cached;
  }
  cv::Mat decoded = read_bgr(image);
  try {
    write_npy(npy, decoded);
  } catch (const Error& e) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!disk_warned_) log::warn("{}; decoding the images instead", e.what());
    disk_warned_ = true;
  }
  return decoded;
}

cv::Mat ImageStore::get(int64_t index) const {
  if (cache_ == ImageCache::kRam) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!ram_[index].empty()) return ram_[index];
  }
  cv::Mat resized = resize_long_side(decode(index), size_, augment_);
  if (cache_ == ImageCache::kRam) {
    std::lock_guard<std::mutex> lock(mu_);
    ram_[index] = resized;
  }
  return resized;
}

}  // namespace tandem::detect::detail
