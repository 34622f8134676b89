#include "tandem/detect/train_args.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <functional>
#include <sstream>
#include <variant>

#include "tandem/core/check.h"

namespace tandem::detect {
namespace {

using Member = std::variant<std::string TrainArgs::*, int64_t TrainArgs::*, uint64_t TrainArgs::*,
                            double TrainArgs::*, bool TrainArgs::*, std::vector<int> TrainArgs::*,
                            train::Dtype TrainArgs::*, ImageCache TrainArgs::*>;

struct Field {
  const char* key;
  Member member;
};

const std::vector<Field>& fields() {
  static const std::vector<Field> table = {
      {"model", &TrainArgs::model},
      {"data", &TrainArgs::data},
      {"epochs", &TrainArgs::epochs},
      {"imgsz", &TrainArgs::imgsz},
      {"batch", &TrainArgs::batch},
      {"device", &TrainArgs::device},
      {"project", &TrainArgs::project},
      {"name", &TrainArgs::name},
      {"exist_ok", &TrainArgs::exist_ok},
      {"seed", &TrainArgs::seed},
      {"lr0", &TrainArgs::lr0},
      {"lrf", &TrainArgs::lrf},
      {"momentum", &TrainArgs::momentum},
      {"weight_decay", &TrainArgs::weight_decay},
      {"warmup_epochs", &TrainArgs::warmup_epochs},
      {"warmup_momentum", &TrainArgs::warmup_momentum},
      {"warmup_bias_lr", &TrainArgs::warmup_bias_lr},
      {"cos_lr", &TrainArgs::cos_lr},
      {"nbs", &TrainArgs::nbs},
      {"close_mosaic", &TrainArgs::close_mosaic},
      {"box", &TrainArgs::box},
      {"cls", &TrainArgs::cls},
      {"dfl", &TrainArgs::dfl},
      {"hsv_h", &TrainArgs::hsv_h},
      {"hsv_s", &TrainArgs::hsv_s},
      {"hsv_v", &TrainArgs::hsv_v},
      {"translate", &TrainArgs::translate},
      {"scale", &TrainArgs::scale},
      {"fliplr", &TrainArgs::fliplr},
      {"flipud", &TrainArgs::flipud},
      {"mosaic", &TrainArgs::mosaic},
      {"workers", &TrainArgs::workers},
      {"cache", &TrainArgs::cache},
      {"val", &TrainArgs::val},
      {"sync_bn", &TrainArgs::sync_bn},
      {"plots", &TrainArgs::plots},
      {"save_period", &TrainArgs::save_period},
      {"resume", &TrainArgs::resume},
      {"dtype", &TrainArgs::dtype},
      {"max_norm", &TrainArgs::max_norm},
  };
  return table;
}

std::string trim(std::string s) {
  const auto first = s.find_first_not_of(" \t");
  if (first == std::string::npos) return "";
  return s.substr(first, s.find_last_not_of(" \t") - first + 1);
}

[[noreturn]] void bad_value(const std::string& key, const std::string& value, const char* what) {
  throw InvalidArgument(fmt::format("detect: {}={} is not {}; e.g. {}=...", key, value, what, key));
}

template <typename T>
T parse_number(const std::string& key, const std::string& value, const char* what) {
  T out{};
  const std::string v = trim(value);
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
  if (v.empty() || ec != std::errc() || end != v.data() + v.size()) bad_value(key, value, what);
  return out;
}

bool parse_bool(const std::string& key, const std::string& value) {
  std::string v = trim(value);
  std::transform(v.begin(), v.end(), v.begin(), [](unsigned char c) { return std::tolower(c); });
  if (v == "true" || v == "1" || v == "yes" || v == "on") return true;
  if (v == "false" || v == "0" || v == "no" || v == "off") return false;
  bad_value(key, value, "a boolean (true or false)");
}

// Ultralytics' cache values: False/True (ram), 'ram', 'disk'.
ImageCache parse_cache(const std::string& value) {
  std::string v = trim(value);
  std::transform(v.begin(), v.end(), v.begin(), [](unsigned char c) { return std::tolower(c); });
  if (v == "true") return ImageCache::kRam;
  if (v == "none" || v == "0" || v == "no" || v == "off") return ImageCache::kOff;
  return train::parse_choice<ImageCache>(v);
}

const Field* find_field(const std::string& key) {
  for (const auto& f : fields()) {
    if (key == f.key) return &f;
  }
  return nullptr;
}

}  // namespace

const std::vector<std::string>& train_arg_keys() {
  static const std::vector<std::string> keys = [] {
    std::vector<std::string> k;
    for (const auto& f : fields()) k.emplace_back(f.key);
    return k;
  }();
  return keys;
}

void parse_value(const std::string&, const std::string& value, std::string& out) {
  out = trim(value);
}
void parse_value(const std::string& key, const std::string& value, int64_t& out) {
  out = parse_number<int64_t>(key, value, "a whole number");
}
void parse_value(const std::string& key, const std::string& value, double& out) {
  out = parse_number<double>(key, value, "a number");
}
void parse_value(const std::string& key, const std::string& value, bool& out) {
  out = parse_bool(key, value);
}

std::vector<int> parse_device(const std::string& text) {
  std::string t = trim(text);
  if (t.size() >= 2 && t.front() == '[' && t.back() == ']') t = t.substr(1, t.size() - 2);
  if (t.empty() || t == "cpu" || t == "-1") return {};
  std::vector<int> out;
  size_t start = 0;
  while (start <= t.size()) {
    const size_t comma = std::min(t.find(',', start), t.size());
    const std::string item = trim(t.substr(start, comma - start));
    const int d = parse_number<int>("device", item, "a device list (cpu, 0, or 0,1,...)");
    TANDEM_CHECK(d >= 0, "detect train: device={} names device {}; devices are 0, 1, ... or cpu",
                 text, d);
    TANDEM_CHECK(std::find(out.begin(), out.end(), d) == out.end(),
                 "detect train: device={} names device {} twice", text, d);
    out.push_back(d);
    start = comma + 1;
  }
  return out;
}

void set_train_arg(TrainArgs& args, const std::string& key, const std::string& value) {
  const Field* f = find_field(key);
  TANDEM_CHECK(f != nullptr, "detect train: unknown key '{}'; valid keys: {}", key,
               fmt::join(train_arg_keys(), ", "));
  std::visit(
      [&](auto member) {
        using T = std::remove_cvref_t<decltype(args.*member)>;
        if constexpr (std::is_same_v<T, std::string>) {
          args.*member = trim(value);
        } else if constexpr (std::is_same_v<T, bool>) {
          args.*member = parse_bool(key, value);
        } else if constexpr (std::is_same_v<T, std::vector<int>>) {
          args.*member = parse_device(value);
        } else if constexpr (std::is_same_v<T, train::Dtype>) {
          args.*member = train::parse_choice<train::Dtype>(trim(value));
        } else if constexpr (std::is_same_v<T, ImageCache>) {
          args.*member = parse_cache(value);
        } else if constexpr (std::is_same_v<T, double>) {
          args.*member = parse_number<double>(key, value, "a number");
        } else {
          args.*member = parse_number<T>(key, value, "a whole number");
        }
      },
      f->member);
}

std::vector<std::pair<std::string, std::string>> split_key_values(
    const std::vector<std::string>& tokens, const std::string& command,
    const std::vector<std::string>& keys) {
  std::vector<std::pair<std::string, std::string>> out;
  auto check_key = [&](const std::string& key) {
    TANDEM_CHECK(std::find(keys.begin(), keys.end(), key) != keys.end(),
                 "{}: unknown key '{}'; valid keys: {}", command, key, fmt::join(keys, ", "));
  };
  for (size_t i = 0; i < tokens.size(); ++i) {
    std::string token = tokens[i];
    const bool dashed = token.starts_with("--");
    if (dashed) token = token.substr(2);
    const size_t eq = token.find('=');
    std::string key = token.substr(0, eq), value;
    std::replace(key.begin(), key.end(), '-', '_');
    check_key(key);
    if (eq != std::string::npos) {
      value = token.substr(eq + 1);
    } else {
      TANDEM_CHECK(dashed, "{}: '{}' is not key=value (e.g. {}=...)", command, tokens[i], key);
      TANDEM_CHECK(i + 1 < tokens.size(), "{}: --{} needs a value", command, key);
      value = tokens[++i];
    }
    out.emplace_back(key, value);
  }
  return out;
}

void parse_train_args(const std::vector<std::string>& tokens, TrainArgs& args) {
  for (const auto& [key, value] : split_key_values(tokens, "detect train", train_arg_keys())) {
    set_train_arg(args, key, value);
  }
}

void validate(const TrainArgs& a) {
  TANDEM_CHECK(!a.data.empty() || !a.resume.empty(),
               "detect train: data= is required (a dataset YAML, e.g. data=shapes/shapes.yaml)");
  TANDEM_CHECK(a.epochs >= 1, "detect train: epochs must be at least 1, got {}", a.epochs);
  TANDEM_CHECK(a.imgsz >= 32 && a.imgsz % 32 == 0,
               "detect train: imgsz must be a positive multiple of 32 (the largest stride), got {}",
               a.imgsz);
  const int world = world_size_of(a);
  TANDEM_CHECK(a.batch >= 1 && a.batch % world == 0,
               "detect train: batch={} must be a positive multiple of the {} devices (it is the "
               "global batch, split evenly over them)",
               a.batch, world);
  TANDEM_CHECK(a.nbs >= 1, "detect train: nbs must be at least 1, got {}", a.nbs);
  TANDEM_CHECK(a.close_mosaic >= 0, "detect train: close_mosaic must be >= 0, got {}",
               a.close_mosaic);
  TANDEM_CHECK(a.lr0 > 0 && a.lrf > 0 && a.lrf <= 1,
               "detect train: lr0 must be positive and lrf in (0, 1], got lr0={} lrf={}", a.lr0,
               a.lrf);
  TANDEM_CHECK(a.momentum >= 0 && a.momentum < 1 && a.warmup_momentum >= 0 && a.warmup_momentum < 1,
               "detect train: momentum and warmup_momentum must be in [0, 1), got {} and {}",
               a.momentum, a.warmup_momentum);
  TANDEM_CHECK(a.weight_decay >= 0 && a.warmup_epochs >= 0 && a.warmup_bias_lr >= 0,
               "detect train: weight_decay, warmup_epochs and warmup_bias_lr must be >= 0");
  TANDEM_CHECK(a.mosaic == 0 || a.mosaic == 1,
               "detect train: mosaic is 0 or 1 here (on or off), got {}", a.mosaic);
  TANDEM_CHECK(a.workers >= 0,
               "detect train: workers must be >= 0 (0 loads on the training "
               "thread), got {}",
               a.workers);
  TANDEM_CHECK(a.max_norm > 0, "detect train: max_norm must be positive, got {}", a.max_norm);
  TANDEM_CHECK(!a.project.empty() && !a.name.empty() && a.name.find('/') == std::string::npos,
               "detect train: project and name must be non-empty and name a single folder, got "
               "project='{}' name='{}'",
               a.project, a.name);
}

std::string to_yaml(const TrainArgs& args) {
  std::string out;
  for (const auto& f : fields()) {
    std::string text = std::visit(
        [&](auto member) -> std::string {
          using T = std::remove_cvref_t<decltype(args.*member)>;
          const auto& v = args.*member;
          if constexpr (std::is_same_v<T, std::string>) {
            return v.empty() ? "''" : fmt::format("'{}'", v);
          } else if constexpr (std::is_same_v<T, bool>) {
            return v ? "true" : "false";
          } else if constexpr (std::is_same_v<T, std::vector<int>>) {
            return v.empty() ? "cpu" : fmt::format("[{}]", fmt::join(v, ", "));
          } else if constexpr (std::is_same_v<T, train::Dtype> || std::is_same_v<T, ImageCache>) {
            return std::string(train::name_of(v));
          } else {
            return fmt::format("{}", v);
          }
        },
        f.member);
    out += fmt::format("{}: {}\n", f.key, text);
  }
  return out;
}

void parse_train_args_yaml(const std::string& yaml, TrainArgs& args) {
  std::istringstream in(yaml);
  std::string line;
  while (std::getline(in, line)) {
    const size_t colon = line.find(':');
    if (line.empty() || line[0] == '#' || colon == std::string::npos) continue;
    std::string value = trim(line.substr(colon + 1));
    if (value.size() >= 2 && value.front() == '\'' && value.back() == '\'') {
      value = value.substr(1, value.size() - 2);
    }
    set_train_arg(args, trim(line.substr(0, colon)), value);
  }
}

int world_size_of(const TrainArgs& args) {
  return std::max<int>(1, static_cast<int>(args.device.size()));
}

}  // namespace tandem::detect
