#include "tandem/memory/allocator_stats.h"

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <fstream>
#include <mutex>
#include <string>

namespace tandem::memory {
namespace {

// Each block starts with a header holding its size, so the raw deleter
// knows what to subtract; 64 bytes keep the payload 64-byte aligned.
constexpr size_t kHeader = 64;

std::atomic<int64_t> g_current{0};
std::atomic<int64_t> g_peak{0};
std::atomic<int64_t> g_allocations{0};
std::atomic<bool> g_installed{false};

void raise_peak(int64_t now) {
  int64_t peak = g_peak.load(std::memory_order_relaxed);
  while (now > peak && !g_peak.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
  }
}

void counted_delete(void* payload) {
  if (payload == nullptr) return;
  char* block = static_cast<char*>(payload) - kHeader;
  size_t n;
  std::memcpy(&n, block, sizeof(n));
  g_current.fetch_sub(static_cast<int64_t>(n), std::memory_order_relaxed);
  c10::free_cpu(block);
}

class CountingAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t n) const override {
    if (n == 0) return {nullptr, nullptr, &counted_delete, c10::Device(c10::DeviceType::CPU)};
    char* block = static_cast<char*>(c10::alloc_cpu(n + kHeader));
    std::memcpy(block, &n, sizeof(n));
    const int64_t now = g_current.fetch_add(static_cast<int64_t>(n), std::memory_order_relaxed) +
                        static_cast<int64_t>(n);
    g_allocations.fetch_add(1, std::memory_order_relaxed);
    raise_peak(now);
    void* payload = block + kHeader;
    return {payload, payload, &counted_delete, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &counted_delete; }
};

int64_t status_kib(const char* field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  const size_t len = std::strlen(field);
  while (std::getline(in, line)) {
    if (line.compare(0, len, field) == 0 && line.size() > len && line[len] == ':') {
      return std::stoll(line.substr(len + 1));
    }
  }
  return 0;
}

}  // namespace

void install_counting_cpu_allocator() {
  static std::once_flag once;
  std::call_once(once, [] {
    static CountingAllocator allocator;
    // Priority above LibTorch's default (0) so nothing later replaces it silently.
    c10::SetCPUAllocator(&allocator, /*priority=*/100);
    g_installed = true;
  });
}

AllocatorStats cpu_allocator_stats() {
  return {g_installed.load(), g_current.load(), g_peak.load(), g_allocations.load()};
}

void reset_cpu_allocator_peak() { g_peak.store(g_current.load()); }

int64_t resident_bytes() { return status_kib("VmRSS") * 1024; }
int64_t peak_resident_bytes() { return status_kib("VmHWM") * 1024; }

bool reset_peak_resident() {
  std::ofstream out("/proc/self/clear_refs");
  out << "5";
  out.flush();
  return static_cast<bool>(out);
}

}  // namespace tandem::memory
