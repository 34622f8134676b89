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

namespace {

// Runs a shell command line; its output, or "" when it succeeded.
std::optional<std::string> shell(const std::string& command) {
  const std::string line = command + " 2>&1";
  FILE* p = ::popen(line.c_str(), "r");
  if (!p) return "popen failed";
  std::string out;
  char buf[512];
  while (size_t n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  const int status = ::pclose(p);
  if (status == 0) return std::nullopt;
  return out.empty() ? "exit status " + std::to_string(status) : out;
}

std::string ip_binary() {
  for (const char* p : {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"}) {
    if (::access(p, X_OK) == 0) return p;
  }
  return "ip";
}

}  // namespace

TwoHosts::TwoHosts() {
  if (::geteuid() != 0) {
    failure_ = "not root";
    return;
  }
  const std::string id = std::to_string(::getpid());
  name_[0] = "tdm-ea-" + id;
  name_[1] = "tdm-eb-" + id;
  const std::string ip = ip_binary();
  const std::string script = fmt::format(
      "{0} netns add {1} && {0} netns add {2} && "
      "{0} link add {3} netns {1} type veth peer name {4} netns {2} && "
      "{0} -n {1} addr add {5}/24 dev {3} && {0} -n {2} addr add {6}/24 dev {4} && "
      "{0} -n {1} link set lo up && {0} -n {2} link set lo up && "
      "{0} -n {1} link set {3} up && {0} -n {2} link set {4} up",
      ip, name_[0], name_[1], interface(0), interface(1), address(0), address(1));
  if (auto err = shell(script)) failure_ = "cannot build two hosts in network namespaces: " + *err;
}

TwoHosts::~TwoHosts() {
  for (const auto& n : name_) {
    if (n.empty()) continue;
    shell(fmt::format("{0} netns pids {1} | xargs -r kill -9; {0} netns del {1}", ip_binary(), n));
  }
}

std::vector<std::string> TwoHosts::exec(int host) const {
  return {ip_binary(), "netns", "exec", name_[host]};
}

std::string TwoHosts::address(int host) const { return host == 0 ? "10.213.78.1" : "10.213.78.2"; }

std::string TwoHosts::interface(int host) const {
  return fmt::format("{}{}", host == 0 ? "vea" : "veb", ::getpid() % 100000);
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
