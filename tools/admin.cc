#include "admin.h"

#include <sys/stat.h>

#include <fstream>

namespace strata::tools {

absl::StatusOr<bool> EnsureAdmin(Store& store, const std::string& dir) {
  if (!store.ListAccounts().empty()) return false;
  absl::StatusOr<Account> admin = store.CreateAccount("admin");
  if (!admin.ok()) return admin.status();
  const std::string credentials = dir + "/credentials";
  {
    std::ofstream out(credentials, std::ios::trunc);
    out << "[default]\naws_access_key_id = " << admin->access_key_id
        << "\naws_secret_access_key = " << admin->secret_access_key << "\n";
    if (!out) return absl::InternalError("cannot write " + credentials);
  }
  ::chmod(credentials.c_str(), 0600);
  std::ofstream config(dir + "/config", std::ios::trunc);
  config << "[default]\nregion = " << store.DefaultRegion()->name() << "\n";
  if (!config) return absl::InternalError("cannot write " + dir + "/config");
  return true;
}

}  // namespace strata::tools
