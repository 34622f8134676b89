#include "tests/train/elastic/elastic_job.h"

#include <fmt/format.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <thread>

#include "tandem/launch/launcher.h"
#include "tandem/train/checkpoint_file.h"
#include "tandem/train/sharded_checkpoint.h"

namespace tandem::testing {
namespace fs = std::filesystem;

namespace {

launch::ChildOptions keep_output() {
  launch::ChildOptions o;
  o.keep_output_bytes = size_t{16} << 20;
  return o;
}

}  // namespace

ElasticJob::ElasticJob(const std::vector<std::string>& launcher_args,
                       const std::vector<std::string>& train_args,
                       const std::vector<std::string>& extra_env,
                       const std::vector<std::string>& wrapper)
    : process_(keep_output()) {
  std::vector<std::string> argv = wrapper;
  argv.push_back(tandem_run_binary());
  argv.insert(argv.end(), launcher_args.begin(), launcher_args.end());
  argv.insert(argv.end(), {"--", tandem_cli_path(), "train"});
  argv.insert(argv.end(), train_args.begin(), train_args.end());
  process_.start_program(0, argv[0], argv,
                         launch::environment_with(launch::current_environment(), extra_env));
}

pid_t ElasticJob::launcher_pid() const { return process_.results()[0].pid; }

std::optional<pid_t> ElasticJob::worker_pid(int worker_id) const {
  return launch::find_child_with_env(launcher_pid(),
                                     "TANDEM_WORKER_ID=" + std::to_string(worker_id));
}

bool ElasticJob::wait_for_step(const std::string& path, int64_t step,
                               std::chrono::milliseconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < until) {
    process_.poll(Millis(20));
    if (process_.all_exited()) return false;
    for (const auto& line : read_metrics(path)) {
      if (line.contains("step") && !line.contains("summary") && line["step"].get<int64_t>() >= step)
        return true;
    }
  }
  return false;
}

ElasticJobResult ElasticJob::wait(std::chrono::milliseconds timeout) {
  const launch::ChildResult& r = process_.wait(std::chrono::steady_clock::now() + timeout)[0];
  ElasticJobResult out;
  out.exit_code = r.ok() || (r.exit_code > 0 && r.signal == 0 && !r.timed_out) ? r.exit_code : -1;
  out.output = r.output;
  if (r.timed_out) out.output += "\n(elastic job: " + r.how() + ")\n";
  return out;
}

std::vector<nlohmann::json> read_metrics(const std::string& path) {
  std::vector<nlohmann::json> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    try {
      out.push_back(nlohmann::json::parse(line));
    } catch (const nlohmann::json::exception&) {
    }
  }
  return out;
}

std::map<std::string, at::Tensor> final_state(const std::string& checkpoint_dir) {
  std::map<std::string, at::Tensor> out;
  const std::string latest = train::latest_checkpoint(checkpoint_dir);
  if (!train::is_sharded_checkpoint(latest)) {
    train::Checkpoint c = train::read_checkpoint(latest);
    for (auto& [name, t] : c.parameters) out[name] = t;
    for (auto& [name, t] : c.buffers) out["buffer/" + name] = t;
    return out;
  }
  const train::LoadedShards all = train::read_sharded_checkpoint(latest, 0, 1);
  for (size_t g = 0; g < all.state.groups.size(); ++g) {
    const auto& group = all.state.groups[g];
    out["group" + std::to_string(g) + "/params"] = group.params;
    for (const auto& [field, t] : group.optimizer) {
      out["group" + std::to_string(g) + "/opt/" + field] = t;
    }
  }
  return out;
}

std::vector<std::string> tandem_shm_segments() {
  std::vector<std::string> out;
  for (const auto& entry : fs::directory_iterator("/dev/shm")) {
    const std::string name = entry.path().filename();
    if (name.rfind("tandem", 0) == 0) out.push_back(name);
  }
  return out;
}

}  // namespace tandem::testing
