// The TCP store: LibTorch's c10d::TCPStore behind tandem::Store.
#include <fmt/format.h>

#include <algorithm>
#include <thread>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "comm/c10d_logging.h"
#include "comm/store_detail.h"
#include "tandem/comm/store.h"
#include "tandem/core/check.h"
#include "tandem/core/log.h"

namespace tandem {
namespace {

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

// c10d counts its connect timeout in whole seconds and, given 1 s, tries
// once (a refused connection fails at once; an unanswered one waits the
// second). So a client tries every kRetry, in attempts of kAttempt, and
// says every kProgressEvery (the first time after kFirstProgress) what it
// waits for, instead of waiting the whole timeout in silence. A timeout
// below 1 s still gets one whole attempt: c10d cannot try for less.
constexpr Millis kAttempt{1000};
constexpr Millis kRetry{250};
constexpr Millis kFirstProgress{1000};
constexpr Millis kProgressEvery{5000};

class TcpStore final : public Store {
 public:
  TcpStore(const std::string& host, int port, bool is_server, Millis timeout) : host_(host) {
    detail::quiet_c10d_logs();
    c10d::TCPStoreOptions opts;
    opts.port = static_cast<uint16_t>(port);
    opts.isServer = is_server;
    opts.waitWorkers = false;
    opts.timeout = std::max(timeout, kAttempt);  // the server's own client connects too
    if (is_server) {
      try {
        store_ = c10::make_intrusive<c10d::TCPStore>(host, opts);
        store_->setTimeout(timeout);
      } catch (const std::exception& e) {
        throw PeerError(fmt::format(
            "could not serve the TCP store on {}:{} ({}); is the port in use? pick another "
            "with MASTER_PORT",
            host, port, first_line(e.what())));
      }
    } else {
      connect(opts, timeout);
    }
    port_ = store_->getPort();
  }

  void set(const std::string& key, const std::string& value) override {
    guard("set", key, [&] { store_->set(key, std::vector<uint8_t>(value.begin(), value.end())); });
  }
  std::string get(const std::string& key, Millis timeout) override {
    wait({key}, timeout);
    std::string out;
    guard("get", key, [&] {
      auto v = store_->get(key);
      out.assign(v.begin(), v.end());
    });
    return out;
  }
  int64_t add(const std::string& key, int64_t delta) override {
    int64_t out = 0;
    guard("add", key, [&] { out = store_->add(key, delta); });
    return out;
  }
  bool check(const std::string& key) override {
    bool out = false;
    guard("check", key, [&] { out = store_->check({key}); });
    return out;
  }
  // Polls rather than using c10d's server-side wait, which holds the client's
  // socket for the whole wait and would block every other thread's calls.
  void wait(const std::vector<std::string>& keys, Millis timeout) override {
    detail::poll_store_keys(*this, keys, timeout);
  }
  std::string address() const override { return fmt::format("tcp://{}:{}", host_, port_); }
  int port() const { return port_; }

 private:
  // Retries short connection attempts until `timeout`, logging (to stderr)
  // what it waits for now and then. Throws TimeoutError naming host:port.
  void connect(c10d::TCPStoreOptions opts, Millis timeout) {
    Deadline deadline(timeout, "TCP store connect timeout");
    Millis next_progress = kFirstProgress;
    std::string cause;
    while (true) {
      opts.timeout = kAttempt;
      const Clock::time_point attempt = Clock::now();
      try {
        store_ = c10::make_intrusive<c10d::TCPStore>(host_, opts);
        store_->setTimeout(timeout);
        return;
      } catch (const std::exception& e) {
        cause = first_line(e.what());
      }
      if (deadline.expired()) break;
      // A refused attempt returns at once: wait out the rest of its turn.
      std::this_thread::sleep_for(
          std::min(deadline.remaining(),
                   std::chrono::duration_cast<Millis>(attempt + kRetry - Clock::now())));
      if (deadline.elapsed() >= next_progress) {
        log::warn(
            "waiting for the TCP store at {}:{}: no connection after {}, giving up at {}; rank 0 "
            "(or tandem-run) serves it: check that it runs and that MASTER_ADDR and MASTER_PORT "
            "point to it",
            host_, opts.port, format_duration(deadline.elapsed()),
            format_duration(deadline.timeout()));
        next_progress = deadline.elapsed() + kProgressEvery;
      }
    }
    throw TimeoutError(fmt::format(
        "could not reach the TCP store at {}:{} within {} (last attempt: {}); check MASTER_ADDR "
        "and MASTER_PORT and that rank 0 (or tandem-run) is running",
        host_, opts.port, format_duration(timeout), cause));
  }

  template <typename Fn>
  void guard(const char* op, const std::string& key, Fn&& fn) {
    std::lock_guard<std::mutex> lock(mutex_);
    try {
      fn();
    } catch (const std::exception& e) {
      const std::string what = first_line(e.what());
      throw PeerError(
          fmt::format("store {}: {} of key '{}' failed ({}); the store's host (rank 0 "
                      "or tandem-run) may have exited",
                      address(), op, key, what));
    }
  }

  std::string host_;
  int port_ = 0;
  std::mutex mutex_;  // serialises calls on the one client socket
  c10::intrusive_ptr<c10d::TCPStore> store_;
};

}  // namespace

std::shared_ptr<Store> make_tcp_store(const std::string& host, int port, bool is_server,
                                      Millis timeout) {
  TANDEM_CHECK(port >= 0 && port <= 65535, "TCP store port {} is outside [0, 65535]", port);
  TANDEM_CHECK(is_server || port > 0, "TCP store client needs a port (got 0)");
  TANDEM_CHECK(!host.empty(), "TCP store host is empty; set MASTER_ADDR");
  return std::make_shared<TcpStore>(host, port, is_server, timeout);
}

int tcp_store_port(const Store& store) {
  auto* tcp = dynamic_cast<const TcpStore*>(&store);
  TANDEM_CHECK(tcp != nullptr, "tcp_store_port: store {} is not a TCP store", store.address());
  return tcp->port();
}

}  // namespace tandem
