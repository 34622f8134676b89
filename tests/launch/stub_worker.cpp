// A stand-in worker for the launcher tests: it connects to the store that
// tandem-run serves (TANDEM_STORE_SERVED=1) as a client, as real workers do,
// and plays the worker side of the protocol just enough to test the
// launcher. Every wait is bounded (60 s in all); it never trains.
//   STUB_DIR   where it writes "started" (one line per start) and pid-<id>
//   STUB_MODE  "plain": rank 0 of the first attempt sets stub/first to its
//              pid and waits to be killed; on a restart it copies the value
//              to STUB_DIR/seen (so the store outlived it) and exits 0.
//              "elastic": joins, beats, leaves each generation that ends,
//              and once STUB_DIR/finish exists, rank 0 of the latest
//              generation sets `complete`; everyone exits 0 on `complete`.
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <thread>

#include "tandem/comm/store.h"
#include "tandem/launch/elastic_protocol.h"

namespace {

using namespace tandem;
namespace el = tandem::launch::elastic;

std::string env_or(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

void append_line(const std::string& path, const std::string& line) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (fd < 0) return;
  std::string l = line + "\n";
  (void)!::write(fd, l.data(), l.size());  // one small write: lines never mix
  ::close(fd);
}

void write_file(const std::string& path, const std::string& text) {
  { std::ofstream(path + ".tmp") << text; }
  std::filesystem::rename(path + ".tmp", path);
}

int run_plain(Store& store, const std::string& dir, int rank, int restart) {
  if (rank != 0) return 0;
  if (restart == 0) {
    store.set("stub/first", std::to_string(::getpid()));
    write_file(dir + "/ready", "1");
    std::this_thread::sleep_for(std::chrono::seconds(60));  // the test kills it
    return 3;
  }
  write_file(dir + "/seen", store.get("stub/first", Millis(10'000)));
  return 0;
}

int run_elastic(Store& base, const std::string& dir) {
  auto store = with_prefix(std::shared_ptr<Store>(&base, [](Store*) {}), el::kElasticPrefix);
  const el::ElasticEnv e = el::read_elastic_env();
  const int64_t k = store->add("join/count", 1);
  store->set(el::join_key(k), std::to_string(e.worker_id));
  int64_t left_below = 0;  // generations below this are checked
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    store->add(el::heartbeat_key(e.worker_id), 1);
    if (store->check("complete")) return 0;
    if (store->check("abort")) return 1;
    const int64_t decided = store->add("gen/decided", 0);
    for (int64_t g = left_below; g < decided; ++g) {
      if (!store->check(el::end_key(g))) break;
      store->set(el::left_key(g, e.worker_id), "0");
      left_below = g + 1;
    }
    if (decided > 0 && std::filesystem::exists(dir + "/finish")) {
      auto members = el::parse_members(store->get(el::members_key(decided - 1), Millis(5000)));
      if (members.front() == e.worker_id) {
        store->set("complete", "1");
        return 0;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::cerr << "stub worker " << e.worker_id << ": no `complete` within 60 s\n";
  return 4;
}

}  // namespace

int main() {
  try {
    const std::string dir = env_or("STUB_DIR", ".");
    const int rank = std::stoi(env_or("RANK", "0"));
    const int restart = std::stoi(env_or("TANDEM_RESTART_COUNT", "0"));
    const std::string id = env_or("TANDEM_WORKER_ID", env_or("RANK", "0").c_str());
    append_line(
        dir + "/started",
        "id=" + id + " rank=" + std::to_string(rank) + " world=" + env_or("WORLD_SIZE", "?") +
            " join=" + env_or("TANDEM_ELASTIC_JOIN", "-") + " restart=" + std::to_string(restart) +
            " served=" + env_or("TANDEM_STORE_SERVED", "-") + " pid=" + std::to_string(::getpid()));
    auto store = make_tcp_store(env_or("MASTER_ADDR", "127.0.0.1"),
                                std::stoi(env_or("MASTER_PORT", "0")), false, Millis(10'000));
    write_file(dir + "/pid-" + id, std::to_string(::getpid()));
    if (env_or("STUB_MODE", "plain") == "elastic") return run_elastic(*store, dir);
    return run_plain(*store, dir, rank, restart);
  } catch (const std::exception& e) {
    std::cerr << "stub worker: " << e.what() << "\n";
    return 2;
  }
}
