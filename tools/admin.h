#pragma once
// The first-start setup shared by stratad and `strata init`: an admin account, and
// DIR/credentials and DIR/config in the AWS shared-file format.

#include <string>

#include "absl/status/status.h"
#include "strata/store.h"

namespace strata::tools {

// Creates the admin account and its files when the store has no account. Returns whether it did.
absl::StatusOr<bool> EnsureAdmin(Store& store, const std::string& dir);

}  // namespace strata::tools
