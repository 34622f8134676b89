#include "comm/progress_board.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <chrono>
#include <vector>

#include "tandem/core/log.h"

namespace tandem::detail {
namespace {

constexpr auto kPostInterval = std::chrono::milliseconds(500);
// A rank silent for longer than this is reported as probably dead.
constexpr int64_t kSilentMs = 3000;

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string key_of(int rank) { return fmt::format("progress/{}", rank); }

}  // namespace

ProgressBoard::ProgressBoard(std::shared_ptr<Store> store, int rank, int size)
    : store_(std::move(store)), rank_(rank), size_(size) {
  post();
  thread_ = std::thread([this] { loop(); });
}

ProgressBoard::~ProgressBoard() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  stop_cv_.notify_all();
  thread_.join();  // bounded: the loop wakes at once and a post is one store call
}

void ProgressBoard::post() {
  try {
    store_->set(key_of(rank_), fmt::format("{} {}", seq_.load(), now_ms()));
  } catch (const std::exception& e) {
    log::debug("progress board: could not post: {}", e.what());
  }
}

void ProgressBoard::loop() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stop_cv_.wait_for(lock, kPostInterval, [this] { return stop_; })) {
    lock.unlock();
    post();
    lock.lock();
  }
}

std::string ProgressBoard::describe_peers(uint64_t seq) {
  std::vector<std::string> behind;
  std::vector<std::string> silent;
  int64_t now = now_ms();
  for (int r = 0; r < size_; ++r) {
    if (r == rank_) continue;
    try {
      if (!store_->check(key_of(r))) {
        silent.push_back(fmt::format("rank {} never posted progress", r));
        continue;
      }
      std::string v = store_->get(key_of(r), std::chrono::milliseconds(1000));
      uint64_t their_seq = 0;
      int64_t at = 0;
      if (std::sscanf(v.c_str(), "%lu %ld", &their_seq, &at) != 2) continue;
      double ago = static_cast<double>(now - at) / 1000.0;
      if (now - at > kSilentMs) {
        silent.push_back(
            fmt::format("rank {} not heard from for {:.1f} s (dead or stopped?; last "
                        "entered collective #{})",
                        r, ago, their_seq));
      } else if (their_seq < seq) {
        behind.push_back(fmt::format("rank {} (last entered collective #{}, alive {:.1f} s ago)", r,
                                     their_seq, ago));
      }
    } catch (const std::exception& e) {
      silent.push_back(fmt::format("rank {} unknown ({})", r, e.what()));
    }
  }
  std::string out;
  if (!behind.empty()) {
    out += fmt::format("ranks that have not reached it: {}", fmt::join(behind, ", "));
  }
  if (!silent.empty()) {
    if (!out.empty()) out += "; ";
    out += fmt::format("{}", fmt::join(silent, "; "));
  }
  if (out.empty()) out = "every peer has reached it and is alive (a slow link?)";
  return out;
}

}  // namespace tandem::detail
