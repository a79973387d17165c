#include "region/kms_catalog_storage.h"

#include "absl/strings/str_cat.h"
#include "meta/schema.h"
#include "util/status_macros.h"

namespace strata::region {

absl::StatusOr<std::vector<std::pair<std::string, std::string>>> KmsCatalogStorage::LoadAll() {
  std::vector<std::pair<std::string, std::string>> out;
  STRATA_RETURN_IF_ERROR(
      catalog_.Scan(meta::kKmsPrefix, "", [&](absl::string_view key, absl::string_view value) {
        out.emplace_back(std::string(key.substr(meta::kKmsPrefix.size())), std::string(value));
        return true;
      }));
  return out;
}

absl::Status KmsCatalogStorage::Put(const std::string& key, const std::string& value) {
  meta::WriteBatch batch;
  batch.Put(absl::StrCat(meta::kKmsPrefix, key), value);
  return catalog_.Write(batch);
}

absl::Status KmsCatalogStorage::Delete(const std::string& key) {
  meta::WriteBatch batch;
  batch.Delete(absl::StrCat(meta::kKmsPrefix, key));
  return catalog_.Write(batch);
}

}  // namespace strata::region
