#include "comm/gloo/gloo_store_adapter.h"

#include "tandem/core/error.h"

namespace tandem::detail {

GlooStoreAdapter::GlooStoreAdapter(std::shared_ptr<tandem::Store> store, Millis timeout)
    : c10d::Store(timeout), store_(std::move(store)) {}

void GlooStoreAdapter::set(const std::string& key, const std::vector<uint8_t>& value) {
  store_->set(key, std::string(value.begin(), value.end()));
}

std::vector<uint8_t> GlooStoreAdapter::get(const std::string& key) {
  std::string v = store_->get(key, timeout_);
  return std::vector<uint8_t>(v.begin(), v.end());
}

int64_t GlooStoreAdapter::add(const std::string& key, int64_t value) {
  return store_->add(key, value);
}

bool GlooStoreAdapter::deleteKey(const std::string&) {
  throw NotSupported("the Gloo store adapter cannot delete keys");
}

bool GlooStoreAdapter::check(const std::vector<std::string>& keys) {
  for (const auto& k : keys) {
    if (!store_->check(k)) return false;
  }
  return true;
}

int64_t GlooStoreAdapter::getNumKeys() {
  throw NotSupported("the Gloo store adapter cannot count keys");
}

void GlooStoreAdapter::wait(const std::vector<std::string>& keys) { store_->wait(keys, timeout_); }

void GlooStoreAdapter::wait(const std::vector<std::string>& keys,
                            const std::chrono::milliseconds& timeout) {
  store_->wait(keys, timeout);
}

}  // namespace tandem::detail
