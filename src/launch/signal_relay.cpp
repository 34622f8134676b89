#include "launch/signal_relay.h"

#include <string.h>

#include <atomic>

#include "tandem/core/check.h"

namespace tandem::launch {
namespace {

// Process-wide because a signal handler can reach nothing else; only one
// SignalRelay owns them at a time (g_active). Lock-free atomics are
// async-signal-safe.
std::atomic<int> g_first{0};
std::atomic<int> g_count{0};
std::atomic<bool> g_active{false};

extern "C" void on_signal(int sig) {
  int expected = 0;
  g_first.compare_exchange_strong(expected, sig);
  g_count.fetch_add(1);
}

}  // namespace

SignalRelay::SignalRelay() {
  bool was_active = g_active.exchange(true);
  TANDEM_ASSERT(!was_active, "only one SignalRelay may exist at a time");
  g_first.store(0);
  g_count.store(0);
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  // No SA_RESTART: poll() should return at once so the signal is forwarded
  // without waiting for the poll timeout.
  sa.sa_flags = 0;
  sigaction(SIGINT, &sa, &old_int_);
  sigaction(SIGTERM, &sa, &old_term_);
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  sigemptyset(&ignore.sa_mask);
  sigaction(SIGPIPE, &ignore, &old_pipe_);
}

SignalRelay::~SignalRelay() {
  sigaction(SIGINT, &old_int_, nullptr);
  sigaction(SIGTERM, &old_term_, nullptr);
  sigaction(SIGPIPE, &old_pipe_, nullptr);
  g_active.store(false);
}

int SignalRelay::first() const { return g_first.load(); }
int SignalRelay::count() const { return g_count.load(); }

std::string signal_name(int sig) {
  const char* abbrev = sigabbrev_np(sig);
  if (abbrev == nullptr) return "signal " + std::to_string(sig);
  return std::string("SIG") + abbrev;
}

}  // namespace tandem::launch
