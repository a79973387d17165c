#include "admin.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace strata::tools {

absl::StatusOr<bool> EnsureAdmin(Store& store, const std::string& dir) {
  const std::string credentials = dir + "/credentials";
  std::optional<Account> admin;
  for (const Account& account : store.ListAccounts()) {
    if (account.name == "admin") admin = account;
  }
  // Accounts exist: made here, or (RADOS) by another node of the cluster, whose admin this
  // node's credentials file then names too.
  const bool made_elsewhere = admin.has_value() && !std::filesystem::exists(credentials) &&
                              absl::StartsWith(store.DescribeBackend(), "rados");
  if (!store.ListAccounts().empty() && !made_elsewhere) return false;
  if (!admin.has_value()) {
    absl::StatusOr<Account> created = store.CreateAccount("admin");
    if (!created.ok()) return created.status();
    admin = *created;
  }
  {
    // Owner-only from the start: the file is made 0600 (and an older one made so) before a
    // byte of the secret is written.
    const int fd = ::open(credentials.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || ::fchmod(fd, 0600) != 0) {
      if (fd >= 0) ::close(fd);
      return absl::InternalError("cannot write " + credentials);
    }
    const std::string text =
        absl::StrCat("[default]\naws_access_key_id = ", admin->access_key_id,
                     "\naws_secret_access_key = ", admin->secret_access_key, "\n");
    const bool written = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
    if (::close(fd) != 0 || !written) return absl::InternalError("cannot write " + credentials);
  }
  std::ofstream config(dir + "/config", std::ios::trunc);
  config << "[default]\nregion = " << store.DefaultRegion()->name() << "\n";
  if (!config) return absl::InternalError("cannot write " + dir + "/config");
  return !made_elsewhere;
}

}  // namespace strata::tools

namespace strata::tools {

std::string DefaultKmsRootKeyPath(const std::string& dir) {
  std::string d = dir;
  while (d.size() > 1 && d.back() == '/') d.pop_back();
  return d + ".kms-root-key";
}

absl::StatusOr<SecretBytes> LoadKmsRootKey(const std::string& path, bool generate,
                                           bool* generated) {
  auto parse = [](const std::string& text,
                  const std::string& where) -> absl::StatusOr<SecretBytes> {
    std::string hex(absl::StripAsciiWhitespace(text));
    const bool ok = hex.size() == 64 && std::all_of(hex.begin(), hex.end(), [](char c) {
                      return absl::ascii_isxdigit(static_cast<unsigned char>(c));
                    });
    if (!ok) {
      OPENSSL_cleanse(hex.data(), hex.size());
      return absl::InvalidArgumentError(
          absl::StrCat("the KMS root key in ", where, " must be 64 hex digits (32 bytes)"));
    }
    SecretBytes key(absl::HexStringToBytes(hex));
    OPENSSL_cleanse(hex.data(), hex.size());
    return key;
  };
  if (generated != nullptr) *generated = false;
  if (const char* env = std::getenv("STRATA_KMS_ROOT_KEY"); env != nullptr && *env != '\0') {
    return parse(env, "STRATA_KMS_ROOT_KEY");
  }
  std::ifstream in(path);
  if (in) {
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    absl::StatusOr<SecretBytes> key = parse(text, path);
    OPENSSL_cleanse(text.data(), text.size());
    return key;
  }
  if (!generate) return SecretBytes();
  const std::string hex = absl::BytesToHexString(RandomSecret(32).str());
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot create the KMS root key file ", path, ": ", std::strerror(errno)));
  }
  const std::string line = hex + "\n";
  const bool written = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size()) &&
                       ::fsync(fd) == 0;
  ::close(fd);
  if (!written) return absl::UnavailableError(absl::StrCat("cannot write ", path));
  if (generated != nullptr) *generated = true;
  return parse(hex, path);
}

}  // namespace strata::tools
