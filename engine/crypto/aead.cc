#include "crypto/aead.h"

#include <openssl/evp.h>

#include <cstdlib>
#include <memory>

namespace strata::crypto {
namespace {

struct CtxDeleter {
  void operator()(EVP_CIPHER_CTX* ctx) const { EVP_CIPHER_CTX_free(ctx); }
};
using Ctx = std::unique_ptr<EVP_CIPHER_CTX, CtxDeleter>;

const unsigned char* U(absl::string_view s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}

}  // namespace

std::string Seal(const SecretBytes& key, absl::string_view plaintext, absl::string_view aad) {
  if (key.size() != kAeadKeyBytes) std::abort();
  std::string out = RandomBytes(12);
  out.resize(12 + plaintext.size() + 16);
  auto* p = reinterpret_cast<unsigned char*>(out.data());
  Ctx ctx(EVP_CIPHER_CTX_new());
  int n = 0;
  int tail = 0;
  const bool ok =
      ctx != nullptr &&
      EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key.data(), p) == 1 &&
      EVP_EncryptUpdate(ctx.get(), nullptr, &n, U(aad), static_cast<int>(aad.size())) == 1 &&
      EVP_EncryptUpdate(ctx.get(), p + 12, &n, U(plaintext), static_cast<int>(plaintext.size())) ==
          1 &&
      EVP_EncryptFinal_ex(ctx.get(), p + 12 + n, &tail) == 1 &&
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, 16, p + 12 + plaintext.size()) == 1;
  if (!ok) std::abort();
  return out;
}

absl::StatusOr<SecretBytes> Open(const SecretBytes& key, absl::string_view sealed,
                                 absl::string_view aad) {
  if (key.size() != kAeadKeyBytes) std::abort();
  if (sealed.size() < kAeadOverheadBytes) {
    return absl::DataLossError("ciphertext is truncated");
  }
  const size_t length = sealed.size() - kAeadOverheadBytes;
  SecretBytes out(length);
  Ctx ctx(EVP_CIPHER_CTX_new());
  int n = 0;
  int tail = 0;
  std::string tag(sealed.substr(12 + length));
  const bool ok =
      ctx != nullptr &&
      EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key.data(), U(sealed)) == 1 &&
      EVP_DecryptUpdate(ctx.get(), nullptr, &n, U(aad), static_cast<int>(aad.size())) == 1 &&
      EVP_DecryptUpdate(ctx.get(), out.data(), &n, U(sealed) + 12, static_cast<int>(length)) == 1 &&
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, 16, tag.data()) == 1 &&
      EVP_DecryptFinal_ex(ctx.get(), out.data() + n, &tail) == 1;
  if (!ok) {
    return absl::DataLossError(
        "ciphertext does not authenticate: tampered, or the wrong key or encryption context");
  }
  return out;
}

}  // namespace strata::crypto
