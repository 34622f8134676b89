#include "tandem/detect/run_folder.h"

#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "tandem/core/check.h"

namespace tandem::detect {

namespace fs = std::filesystem;

std::string next_run_dir(const std::string& project, const std::string& name, bool exist_ok) {
  const fs::path base = fs::path(project) / name;
  if (exist_ok || !fs::exists(base)) return base.string();
  for (int i = 2;; ++i) {
    fs::path p = fs::path(project) / fmt::format("{}{}", name, i);
    if (!fs::exists(p)) return p.string();
  }
}

std::string newest_last_checkpoint(const std::string& project) {
  std::error_code ec;
  fs::path best;
  fs::file_time_type best_time;
  if (fs::is_directory(project, ec)) {
    for (const auto& entry : fs::directory_iterator(project, ec)) {
      const fs::path last = entry.path() / "weights" / "last.ckpt";
      if (!fs::is_regular_file(last, ec)) continue;
      const auto t = fs::last_write_time(last, ec);
      if (best.empty() || t > best_time) {
        best = last;
        best_time = t;
      }
    }
  }
  TANDEM_CHECK(!best.empty(),
               "detect train: resume=true found no run with weights/last.ckpt under '{}'; give "
               "the checkpoint instead (resume=runs/detect/train/weights/last.ckpt)",
               project);
  return best.string();
}

std::string run_dir_of_checkpoint(const std::string& checkpoint) {
  return fs::path(checkpoint).parent_path().parent_path().string();
}

RunFolder::RunFolder(std::string dir) : dir_(std::move(dir)) {
  std::error_code ec;
  fs::create_directories(fs::path(dir_) / "weights", ec);
  if (ec)
    throw Error(fmt::format("detect: cannot create the run folder '{}': {}", dir_, ec.message()));
}

std::string checkpoint_path(const std::string& run_dir, const std::string& name) {
  return (fs::path(run_dir) / "weights" / (name + ".ckpt")).string();
}

void RunFolder::write_args(const std::string& yaml) const {
  const fs::path path = fs::path(dir_) / "args.yaml";
  std::ofstream out(path);
  out << yaml;
  if (!out) throw Error(fmt::format("detect: cannot write '{}'", path.string()));
}

void RunFolder::append_results(const std::vector<double>& row) const {
  const fs::path path = fs::path(dir_) / "results.csv";
  const bool fresh = !fs::exists(path);
  std::ofstream out(path, std::ios::app);
  if (fresh) out << kResultsHeader << "\n";
  for (size_t i = 0; i < row.size(); ++i) {
    out << (i ? "," : "") << (i == 0 ? fmt::format("{}", row[i]) : fmt::format("{:.6g}", row[i]));
  }
  out << "\n" << std::flush;
  if (!out) throw Error(fmt::format("detect: cannot write '{}'", path.string()));
}

std::vector<std::vector<double>> RunFolder::read_results() const {
  std::ifstream in(fs::path(dir_) / "results.csv");
  std::vector<std::vector<double>> rows;
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    std::vector<double> row;
    std::stringstream ss(line);
    std::string cell;
    while (std::getline(ss, cell, ',')) row.push_back(std::stod(cell));
    rows.push_back(std::move(row));
  }
  return rows;
}

}  // namespace tandem::detect
