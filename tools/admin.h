#pragma once
// The first-start setup shared by stratad and `strata init`: an admin account, and
// DIR/credentials and DIR/config in the AWS shared-file format.

#include <string>

#include "absl/status/status.h"
#include "strata/store.h"

namespace strata::tools {

// Creates the admin account and its files when the store has no account. Returns whether it did.
// On RADOS, where another node may have made the accounts, a node without DIR/credentials gets
// the cluster's admin there.
absl::StatusOr<bool> EnsureAdmin(Store& store, const std::string& dir);

// Where the KMS root key of the store in `dir` is kept by default: beside the data directory
// (DIR.kms-root-key), not in it, so a copy of the data directory alone opens nothing encrypted.
std::string DefaultKmsRootKeyPath(const std::string& dir);

// The KMS root key: from STRATA_KMS_ROOT_KEY (64 hex digits) if set, else from `path` (64 hex
// digits). When the file is missing and `generate`, makes one (mode 0600) and sets *generated;
// otherwise a missing file gives an empty key (the store opens; encrypted data stays closed).
absl::StatusOr<SecretBytes> LoadKmsRootKey(const std::string& path, bool generate, bool* generated);

}  // namespace strata::tools
