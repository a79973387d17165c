#pragma once
// The KMS's records (keys wrapped by the root key, aliases, grants) in a region's catalog, under
// meta::kKmsPrefix. Each change is one synced batch.

#include <string>
#include <utility>
#include <vector>

#include "crypto/kms_impl.h"
#include "meta/catalog.h"

namespace strata::region {

// Thread-safe as its catalog is. `catalog` must outlive it.
class KmsCatalogStorage final : public crypto::KmsStorage {
 public:
  explicit KmsCatalogStorage(meta::Catalog& catalog) : catalog_(catalog) {}
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> LoadAll() override;
  absl::Status Put(const std::string& key, const std::string& value) override;
  absl::Status Delete(const std::string& key) override;

 private:
  meta::Catalog& catalog_;
};

}  // namespace strata::region
