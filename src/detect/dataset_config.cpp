#include "tandem/detect/dataset_config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>

#include "tandem/core/check.h"
#include "tandem/detect/image_io.h"

namespace tandem::detect {
namespace fs = std::filesystem;
namespace {

std::string resolve(const fs::path& base, const std::string& entry) {
  fs::path p(entry);
  return (p.is_absolute() ? p : base / p).lexically_normal().string();
}

std::vector<std::string> read_entries(const YAML::Node& node, const std::string& key,
                                      const std::string& yaml, const fs::path& root) {
  std::vector<std::string> out;
  if (!node) return out;
  if (node.IsScalar()) {
    out.push_back(resolve(root, node.as<std::string>()));
  } else if (node.IsSequence()) {
    for (const auto& item : node) {
      TANDEM_CHECK(item.IsScalar(), "dataset '{}': every entry of '{}' must be a path", yaml, key);
      out.push_back(resolve(root, item.as<std::string>()));
    }
  } else {
    TANDEM_CHECK(false, "dataset '{}': '{}' must be a path or a list of paths", yaml, key);
  }
  return out;
}

std::vector<std::string> read_names(const YAML::Node& node, const std::string& yaml) {
  TANDEM_CHECK(node && (node.IsSequence() || node.IsMap()) && node.size() > 0,
               "dataset '{}': 'names' must be a non-empty list or map of class names", yaml);
  std::vector<std::string> names;
  if (node.IsSequence()) {
    for (const auto& item : node) names.push_back(item.as<std::string>());
    return names;
  }
  std::map<int64_t, std::string> by_id;
  for (const auto& kv : node) {
    int64_t id = -1;
    try {
      id = kv.first.as<int64_t>();
    } catch (const YAML::Exception&) {
      TANDEM_CHECK(false, "dataset '{}': the keys of 'names' must be class ids, got '{}'", yaml,
                   kv.first.as<std::string>());
    }
    by_id[id] = kv.second.as<std::string>();
  }
  for (const auto& [id, name] : by_id) {
    TANDEM_CHECK(id == static_cast<int64_t>(names.size()),
                 "dataset '{}': 'names' must number its classes 0..{} without gaps; class {} "
                 "is missing",
                 yaml, by_id.size() - 1, names.size());
    names.push_back(name);
  }
  return names;
}

void add_folder(const fs::path& dir, std::vector<std::string>& out) {
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.is_regular_file() && is_image_file(e.path().string())) out.push_back(e.path().string());
  }
}

void add_list_file(const fs::path& list, std::vector<std::string>& out) {
  std::ifstream in(list);
  std::string line;
  while (std::getline(in, line)) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    if (line.empty()) continue;
    out.push_back(resolve(list.parent_path(), line));
  }
}

}  // namespace

Split parse_split(const std::string& text) {
  if (text == "train") return Split::kTrain;
  if (text == "val") return Split::kVal;
  if (text == "test") return Split::kTest;
  throw InvalidArgument(fmt::format("unknown split '{}'; use train, val or test", text));
}

const char* split_name(Split split) {
  switch (split) {
    case Split::kTrain:
      return "train";
    case Split::kVal:
      return "val";
    case Split::kTest:
      return "test";
  }
  return "?";
}

DatasetConfig load_dataset_config(const std::string& yaml_path) {
  TANDEM_CHECK(fs::is_regular_file(yaml_path), "dataset '{}': no such file", yaml_path);
  YAML::Node doc;
  try {
    doc = YAML::LoadFile(yaml_path);
  } catch (const YAML::Exception& e) {
    TANDEM_CHECK(false, "dataset '{}': not valid YAML: {}", yaml_path, e.what());
  }
  TANDEM_CHECK(doc.IsMap(), "dataset '{}': expected a map with path, train, val and names",
               yaml_path);
  DatasetConfig config;
  config.yaml_path = yaml_path;
  const fs::path yaml_dir = fs::absolute(yaml_path).parent_path();
  config.root = doc["path"] && doc["path"].IsScalar()
                    ? resolve(yaml_dir, doc["path"].as<std::string>())
                    : yaml_dir.string();
  const fs::path root(config.root);
  for (const char* key : {"train", "val"}) {
    TANDEM_CHECK(doc[key] && !doc[key].IsNull(), "dataset '{}': the key '{}' is missing", yaml_path,
                 key);
  }
  config.train = read_entries(doc["train"], "train", yaml_path, root);
  config.val = read_entries(doc["val"], "val", yaml_path, root);
  if (doc["test"] && !doc["test"].IsNull()) {
    config.test = read_entries(doc["test"], "test", yaml_path, root);
  }
  config.names = read_names(doc["names"], yaml_path);
  return config;
}

std::vector<std::string> list_image_files(const DatasetConfig& config, Split split) {
  const auto& entries = split == Split::kTrain ? config.train
                        : split == Split::kVal ? config.val
                                               : config.test;
  TANDEM_CHECK(!entries.empty(), "dataset '{}': no '{}' entry", config.yaml_path,
               split_name(split));
  std::vector<std::string> files;
  for (const auto& entry : entries) {
    const fs::path p(entry);
    TANDEM_CHECK(fs::exists(p), "dataset '{}': the {} entry '{}' does not exist", config.yaml_path,
                 split_name(split), entry);
    if (fs::is_directory(p)) {
      add_folder(p, files);
    } else if (p.extension() == ".txt") {
      add_list_file(p, files);
    } else {
      files.push_back(entry);
    }
  }
  std::sort(files.begin(), files.end());
  files.erase(std::unique(files.begin(), files.end()), files.end());
  TANDEM_CHECK(!files.empty(), "dataset '{}': the {} split has no images (.jpg, .png, .bmp)",
               config.yaml_path, split_name(split));
  return files;
}

std::string label_path_for(const std::string& image_path) {
  fs::path p(image_path);
  std::vector<fs::path> parts(p.begin(), p.end());
  // The last "images" folder (never the file name itself), as Ultralytics does.
  for (size_t i = parts.size() - 1; i-- > 0;) {
    if (parts[i] == "images") {
      parts[i] = "labels";
      break;
    }
  }
  fs::path out;
  for (const auto& part : parts) out /= part;
  return out.replace_extension(".txt").string();
}

}  // namespace tandem::detect
