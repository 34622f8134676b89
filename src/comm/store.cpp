#include "tandem/comm/store.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>

#include "comm/store_detail.h"
#include "tandem/core/check.h"

namespace tandem {
namespace {

// Polls check() with backoff until every key exists; one round trip per turn.
void poll_keys(Store& store, const std::vector<std::string>& keys, Millis timeout) {
  Deadline deadline(timeout, "store wait timeout");
  std::vector<std::string> missing = keys;
  auto sleep = std::chrono::microseconds(100);
  while (true) {
    std::vector<std::string> still;
    for (const auto& k : missing) {
      if (!store.check(k)) still.push_back(k);
    }
    missing = std::move(still);
    if (missing.empty()) return;
    if (deadline.expired()) {
      throw TimeoutError(fmt::format(
          "store {}: waited {} (the timeout of this store call) for keys that never appeared: {}",
          store.address(), format_duration(deadline.elapsed()), fmt::join(missing, ", ")));
    }
    std::this_thread::sleep_for(std::min(sleep, std::chrono::microseconds(deadline.remaining())));
    sleep = std::min(sleep * 2, std::chrono::microseconds(20'000));
  }
}

class MemoryStore final : public Store {
 public:
  void set(const std::string& key, const std::string& value) override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      data_[key] = value;
    }
    cv_.notify_all();
  }
  std::string get(const std::string& key, Millis timeout) override {
    wait({key}, timeout);
    std::lock_guard<std::mutex> lock(mutex_);
    return data_.at(key);
  }
  int64_t add(const std::string& key, int64_t delta) override {
    int64_t out;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = data_.find(key);
      int64_t cur = it == data_.end() ? 0 : std::stoll(it->second);
      out = cur + delta;
      data_[key] = std::to_string(out);
    }
    cv_.notify_all();
    return out;
  }
  bool check(const std::string& key) override {
    std::lock_guard<std::mutex> lock(mutex_);
    return data_.count(key) > 0;
  }
  void wait(const std::vector<std::string>& keys, Millis timeout) override {
    Deadline deadline(timeout, "store wait timeout");
    std::unique_lock<std::mutex> lock(mutex_);
    auto all_there = [&] {
      for (const auto& k : keys) {
        if (!data_.count(k)) return false;
      }
      return true;
    };
    if (cv_.wait_until(lock, deadline.at(), all_there)) return;
    std::vector<std::string> missing;
    for (const auto& k : keys) {
      if (!data_.count(k)) missing.push_back(k);
    }
    throw TimeoutError(fmt::format(
        "store memory: waited {} (the timeout of this store call) for keys that never "
        "appeared: {}",
        format_duration(timeout), fmt::join(missing, ", ")));
  }
  std::string address() const override { return "memory"; }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;               // guarded by mutex_
  std::map<std::string, std::string> data_;  // guarded by mutex_
};

class PrefixStore final : public Store {
 public:
  PrefixStore(std::shared_ptr<Store> base, std::string prefix)
      : base_(std::move(base)), prefix_(std::move(prefix) + "/") {}
  void set(const std::string& key, const std::string& value) override {
    base_->set(prefix_ + key, value);
  }
  std::string get(const std::string& key, Millis timeout) override {
    return base_->get(prefix_ + key, timeout);
  }
  int64_t add(const std::string& key, int64_t delta) override {
    return base_->add(prefix_ + key, delta);
  }
  bool check(const std::string& key) override { return base_->check(prefix_ + key); }
  void wait(const std::vector<std::string>& keys, Millis timeout) override {
    std::vector<std::string> full;
    for (const auto& k : keys) full.push_back(prefix_ + k);
    base_->wait(full, timeout);
  }
  std::string address() const override { return base_->address(); }
  Store* base() const { return base_.get(); }

 private:
  std::shared_ptr<Store> base_;
  std::string prefix_;
};

}  // namespace

std::shared_ptr<Store> make_memory_store() { return std::make_shared<MemoryStore>(); }

std::shared_ptr<Store> with_prefix(std::shared_ptr<Store> base, const std::string& prefix) {
  TANDEM_CHECK(base != nullptr, "with_prefix: base store is null");
  TANDEM_CHECK(!prefix.empty(), "with_prefix: prefix is empty");
  return std::make_shared<PrefixStore>(std::move(base), prefix);
}

namespace detail {

void poll_store_keys(Store& store, const std::vector<std::string>& keys, Millis timeout) {
  poll_keys(store, keys, timeout);
}

}  // namespace detail
}  // namespace tandem
