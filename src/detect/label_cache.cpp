#include "tandem/detect/label_cache.h"

#include <unistd.h>
#include <xxhash.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <system_error>

#include "tandem/core/check.h"
#include "tandem/core/log.h"
#include "tandem/detect/dataset_config.h"
#include "tandem/detect/image_io.h"

namespace tandem::detect {
namespace fs = std::filesystem;
namespace {

// Bumped whenever the cache's JSON changes shape.
constexpr int kCacheVersion = 1;

void hash_file(XXH64_state_t* state, const std::string& path) {
  XXH64_update(state, path.data(), path.size() + 1);
  std::error_code ec;
  int64_t stamp[2] = {-1, -1};
  auto size = fs::file_size(path, ec);
  if (!ec) stamp[0] = static_cast<int64_t>(size);
  auto mtime = fs::last_write_time(path, ec);
  if (!ec) stamp[1] = mtime.time_since_epoch().count();
  XXH64_update(state, stamp, sizeof(stamp));
}

std::string fingerprint(const std::vector<std::string>& images, int64_t num_classes) {
  XXH64_state_t* state = XXH64_createState();
  XXH64_reset(state, static_cast<XXH64_hash_t>(num_classes));
  for (const auto& image : images) {
    hash_file(state, image);
    hash_file(state, label_path_for(image));
  }
  const uint64_t h = XXH64_digest(state);
  XXH64_freeState(state);
  return fmt::format("{:016x}", h);
}

nlohmann::json to_json(const LabelScan& scan, const std::string& hash) {
  nlohmann::json records = nlohmann::json::array();
  for (const auto& r : scan.records) {
    nlohmann::json boxes = nlohmann::json::array();
    for (const auto& b : r.boxes) boxes.push_back({b.cls, b.x, b.y, b.w, b.h});
    records.push_back({{"image", r.image},
                       {"label", r.label},
                       {"h", r.height},
                       {"w", r.width},
                       {"boxes", boxes}});
  }
  nlohmann::json skipped = nlohmann::json::array();
  for (const auto& [path, why] : scan.report.skipped) skipped.push_back({path, why});
  const auto& rep = scan.report;
  return {{"version", kCacheVersion},  {"hash", hash},
          {"images", rep.images},      {"missing", rep.missing_labels},
          {"empty", rep.empty_labels}, {"duplicates", rep.duplicates},
          {"skipped", skipped},        {"records", records}};
}

bool from_json(const nlohmann::json& j, const std::string& hash, LabelScan& scan) {
  if (!j.is_object() || j.value("version", 0) != kCacheVersion || j.value("hash", "") != hash) {
    return false;
  }
  auto& rep = scan.report;
  rep.images = j.at("images").get<int64_t>();
  rep.missing_labels = j.at("missing").get<int64_t>();
  rep.empty_labels = j.at("empty").get<int64_t>();
  rep.duplicates = j.at("duplicates").get<int64_t>();
  for (const auto& s : j.at("skipped")) {
    rep.skipped.emplace_back(s.at(0).get<std::string>(), s.at(1).get<std::string>());
  }
  for (const auto& r : j.at("records")) {
    ImageRecord rec{r.at("image").get<std::string>(),
                    r.at("label").get<std::string>(),
                    {},
                    r.at("h").get<int64_t>(),
                    r.at("w").get<int64_t>()};
    for (const auto& b : r.at("boxes")) {
      rec.boxes.push_back(BoxLabel{b.at(0).get<int64_t>(), b.at(1).get<float>(),
                                   b.at(2).get<float>(), b.at(3).get<float>(),
                                   b.at(4).get<float>()});
    }
    scan.records.push_back(std::move(rec));
  }
  rep.usable = static_cast<int64_t>(scan.records.size());
  return true;
}

bool read_cache(const std::string& path, const std::string& hash, LabelScan& scan) {
  std::ifstream in(path);
  if (!in.good()) return false;
  try {
    return from_json(nlohmann::json::parse(in), hash, scan);
  } catch (const nlohmann::json::exception& e) {
    log::warn("label cache '{}' is unreadable ({}); rescanning", path, e.what());
    scan = LabelScan{};
    return false;
  }
}

void write_cache(const std::string& path, const LabelScan& scan, const std::string& hash) {
  const std::string tmp = fmt::format("{}.tmp{}", path, static_cast<int64_t>(::getpid()));
  {
    std::ofstream out(tmp);
    out << to_json(scan, hash).dump();
    if (!out.good()) {
      log::warn("cannot write the label cache '{}'; the next run scans again", path);
      std::error_code ec;
      fs::remove(tmp, ec);
      return;
    }
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) log::warn("cannot write the label cache '{}': {}", path, ec.message());
}

LabelScan scan_files(const std::vector<std::string>& images, int64_t num_classes) {
  LabelScan scan;
  auto& rep = scan.report;
  rep.images = static_cast<int64_t>(images.size());
  for (const auto& image : images) {
    ImageRecord rec{image, label_path_for(image), {}, 0, 0};
    try {
      at::Tensor decoded = read_image(image);
      rec.height = decoded.size(0);
      rec.width = decoded.size(1);
    } catch (const InvalidArgument& e) {
      rep.skipped.emplace_back(image, fmt::format("corrupt image: {}", e.what()));
      continue;
    }
    LabelCheck check = check_label_file(rec.label, num_classes);
    if (!check.error.empty()) {
      rep.skipped.emplace_back(rec.label, check.error);
      continue;
    }
    rep.missing_labels += check.missing ? 1 : 0;
    rep.empty_labels += check.empty ? 1 : 0;
    rep.duplicates += check.duplicates;
    rec.boxes = std::move(check.boxes);
    scan.records.push_back(std::move(rec));
  }
  rep.usable = static_cast<int64_t>(scan.records.size());
  return scan;
}

}  // namespace

std::string label_cache_path(const std::vector<std::string>& images) {
  TANDEM_CHECK(!images.empty(), "label_cache_path: no images");
  fs::path dir = fs::path(label_path_for(images.front())).parent_path();
  return dir.string() + ".cache";
}

LabelScan scan_labels(const std::vector<std::string>& images, int64_t num_classes, bool use_cache) {
  TANDEM_CHECK(!images.empty(), "scan_labels: the list of images is empty");
  TANDEM_CHECK(num_classes >= 1, "scan_labels: num_classes must be at least 1, got {}",
               num_classes);
  const std::string hash = fingerprint(images, num_classes);
  const std::string cache = use_cache ? label_cache_path(images) : "";
  LabelScan scan;
  if (use_cache && read_cache(cache, hash, scan)) {
    scan.report.from_cache = true;
  } else {
    scan = scan_files(images, num_classes);
    if (use_cache) write_cache(cache, scan, hash);
  }
  scan.report.cache_path = cache;
  for (const auto& [path, why] : scan.report.skipped) {
    log::warn("skipping '{}': {}", path, why);
  }
  return scan;
}

std::string describe(const ScanReport& report) {
  return fmt::format(
      "{} images, {} usable, {} skipped (corrupt image or label), {} without a label file, {} "
      "with an empty label file{}",
      report.images, report.usable, report.skipped.size(), report.missing_labels,
      report.empty_labels, report.from_cache ? " (from the label cache)" : "");
}

}  // namespace tandem::detect
