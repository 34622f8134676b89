#include "tandem/detect/label_file.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "tandem/core/check.h"

namespace tandem::detect {
namespace {

bool parse_float(const std::string& token, float& value) {
  const char* end = token.data() + token.size();
  auto [ptr, ec] = std::from_chars(token.data(), end, value);
  return ec == std::errc() && ptr == end && std::isfinite(value);
}

// Parses one row into `box`; returns the reason it is invalid, or "".
std::string parse_row(const std::string& line, int64_t num_classes, BoxLabel& box) {
  std::istringstream in(line);
  std::vector<std::string> tokens;
  for (std::string t; in >> t;) tokens.push_back(t);
  if (tokens.size() != 5) {
    return fmt::format("{} columns, expected 5 (class x y w h)", tokens.size());
  }
  float v[5];
  for (int i = 0; i < 5; ++i) {
    if (!parse_float(tokens[i], v[i])) return fmt::format("'{}' is not a number", tokens[i]);
  }
  if (v[0] != std::floor(v[0]) || v[0] < 0 || v[0] >= static_cast<float>(num_classes)) {
    return fmt::format("class {} is outside 0..{} (the data set has {} names)", tokens[0],
                       num_classes - 1, num_classes);
  }
  for (int i = 1; i < 5; ++i) {
    if (v[i] < 0.0f || v[i] > 1.0f) {
      return fmt::format("coordinate {} is outside 0-1 (labels must be normalised)", tokens[i]);
    }
  }
  box = BoxLabel{static_cast<int64_t>(v[0]), v[1], v[2], v[3], v[4]};
  return "";
}

}  // namespace

LabelCheck check_label_file(const std::string& path, int64_t num_classes) {
  TANDEM_CHECK(num_classes >= 1, "check_label_file: num_classes must be at least 1, got {}",
               num_classes);
  LabelCheck out;
  if (!std::filesystem::exists(path)) {
    out.missing = true;
    return out;
  }
  std::ifstream in(path);
  if (!in.good()) {
    out.error = "cannot read the label file";
    return out;
  }
  std::string line;
  int64_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    BoxLabel box;
    std::string why = parse_row(line, num_classes, box);
    if (!why.empty()) {
      out.error = fmt::format("line {}: {}", line_no, why);
      out.boxes.clear();
      return out;
    }
    if (std::find(out.boxes.begin(), out.boxes.end(), box) != out.boxes.end()) {
      ++out.duplicates;
      continue;
    }
    out.boxes.push_back(box);
  }
  if (in.bad()) {
    out.error = "cannot read the label file";
    out.boxes.clear();
    return out;
  }
  out.empty = out.boxes.empty() && out.duplicates == 0;
  return out;
}

}  // namespace tandem::detect
