// Presents a tandem::Store as the c10d::Store that ProcessGroupGloo needs for
// its rendezvous. Blocking calls use the c10d store's timeout.
#pragma once

#include <memory>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include "tandem/comm/store.h"

namespace tandem::detail {

class GlooStoreAdapter final : public c10d::Store {
 public:
  GlooStoreAdapter(std::shared_ptr<tandem::Store> store, Millis timeout);

  void set(const std::string& key, const std::vector<uint8_t>& value) override;
  std::vector<uint8_t> get(const std::string& key) override;
  int64_t add(const std::string& key, int64_t value) override;
  bool deleteKey(const std::string& key) override;
  bool check(const std::vector<std::string>& keys) override;
  int64_t getNumKeys() override;
  void wait(const std::vector<std::string>& keys) override;
  void wait(const std::vector<std::string>& keys,
            const std::chrono::milliseconds& timeout) override;

 private:
  std::shared_ptr<tandem::Store> store_;
};

}  // namespace tandem::detail
