// The TCP store: LibTorch's c10d::TCPStore behind tandem::Store.
#include <fmt/format.h>

#include <thread>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "comm/store_detail.h"
#include "tandem/comm/store.h"
#include "tandem/core/check.h"

namespace tandem {
namespace {

class TcpStore final : public Store {
 public:
  TcpStore(const std::string& host, int port, bool is_server, Millis timeout) : host_(host) {
    c10d::TCPStoreOptions opts;
    opts.port = static_cast<uint16_t>(port);
    opts.isServer = is_server;
    opts.waitWorkers = false;
    opts.timeout = timeout;
    try {
      store_ = c10::make_intrusive<c10d::TCPStore>(host, opts);
    } catch (const std::exception& e) {
      std::string what = e.what();
      auto nl = what.find('\n');
      if (nl != std::string::npos) what.resize(nl);
      if (is_server) {
        throw PeerError(fmt::format(
            "could not serve the TCP store on {}:{} ({}); is the port in use? pick another "
            "with MASTER_PORT",
            host, port, what));
      }
      throw TimeoutError(fmt::format(
          "could not reach the TCP store at {}:{} within {} ({}); check MASTER_ADDR and "
          "MASTER_PORT and that rank 0 (or tandem-run) is running",
          host, port, format_duration(timeout), what));
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
  template <typename Fn>
  void guard(const char* op, const std::string& key, Fn&& fn) {
    std::lock_guard<std::mutex> lock(mutex_);
    try {
      fn();
    } catch (const std::exception& e) {
      std::string what = e.what();
      auto nl = what.find('\n');
      if (nl != std::string::npos) what.resize(nl);
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
