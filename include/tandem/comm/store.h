// A key-value store for rendezvous and out-of-band coordination: set, get,
// add and wait on string keys. make_tcp_store wraps LibTorch's c10d TCPStore
// (one server, on rank 0 or the launcher; every rank a client);
// make_memory_store is in-process, for threads-as-ranks tests; with_prefix
// gives each group its own key space. Thread-safe.
//
// Every blocking call takes a timeout; a TimeoutError names the keys still
// missing and the store's address.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tandem/core/deadline.h"

namespace tandem {

class Store {
 public:
  virtual ~Store() = default;
  virtual void set(const std::string& key, const std::string& value) = 0;
  // Blocks until `key` exists or `timeout` passes (TimeoutError naming it).
  virtual std::string get(const std::string& key, Millis timeout) = 0;
  // Adds `delta` to the integer at `key` (0 if absent) and returns the sum.
  virtual int64_t add(const std::string& key, int64_t delta) = 0;
  // True if `key` exists now. Never blocks beyond one round trip.
  virtual bool check(const std::string& key) = 0;
  // Blocks until all `keys` exist or `timeout` passes (TimeoutError naming
  // the keys still missing).
  virtual void wait(const std::vector<std::string>& keys, Millis timeout) = 0;
  // "tcp://127.0.0.1:29500" or "memory": for messages.
  virtual std::string address() const = 0;
};

// Connects to (or, with is_server, serves) a TCP store at host:port. Clients
// retry until `timeout`, then throw TimeoutError naming host and port. With
// is_server and port 0 the OS picks a port: see tcp_store_port().
std::shared_ptr<Store> make_tcp_store(const std::string& host, int port, bool is_server,
                                      Millis timeout);
// The port a TCP store listens on or connects to.
int tcp_store_port(const Store& store);

// An in-process store shared by threads.
std::shared_ptr<Store> make_memory_store();

// A view of `base` whose keys are prefixed with `prefix` + "/".
std::shared_ptr<Store> with_prefix(std::shared_ptr<Store> base, const std::string& prefix);

}  // namespace tandem
