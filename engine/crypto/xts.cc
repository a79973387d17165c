#include "crypto/xts.h"

#include <openssl/evp.h>

#include <cstdlib>
#include <cstring>

namespace strata::crypto {

// Keyed templates, copied per call into a thread's own context (a copy skips the key schedule).
struct Xts::Contexts {
  EVP_CIPHER_CTX* encrypt = nullptr;
  EVP_CIPHER_CTX* decrypt = nullptr;
  ~Contexts() {
    EVP_CIPHER_CTX_free(encrypt);
    EVP_CIPHER_CTX_free(decrypt);
  }
};

Xts::Xts(std::unique_ptr<Contexts> contexts) : contexts_(std::move(contexts)) {}
Xts::~Xts() = default;

absl::StatusOr<std::unique_ptr<Xts>> Xts::Create(const SecretBytes& key) {
  if (key.size() != kXtsKeyBytes) {
    return absl::InvalidArgumentError("an AES-256-XTS key is 64 bytes");
  }
  if (std::memcmp(key.data(), key.data() + 32, 32) == 0) {
    return absl::InvalidArgumentError("the two halves of an XTS key must differ");
  }
  auto contexts = std::make_unique<Contexts>();
  contexts->encrypt = EVP_CIPHER_CTX_new();
  contexts->decrypt = EVP_CIPHER_CTX_new();
  if (contexts->encrypt == nullptr || contexts->decrypt == nullptr ||
      EVP_EncryptInit_ex(contexts->encrypt, EVP_aes_256_xts(), nullptr, key.data(), nullptr) != 1 ||
      EVP_DecryptInit_ex(contexts->decrypt, EVP_aes_256_xts(), nullptr, key.data(), nullptr) != 1) {
    return absl::InternalError("OpenSSL refused the AES-256-XTS key");
  }
  return std::unique_ptr<Xts>(new Xts(std::move(contexts)));
}

void Xts::Run(bool encrypt, uint64_t tweak, std::span<const std::byte> in,
              std::span<std::byte> out) const {
  struct ThreadContext {
    EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
    ~ThreadContext() { EVP_CIPHER_CTX_free(ctx); }
  };
  thread_local ThreadContext local;
  unsigned char iv[16] = {};
  for (int i = 0; i < 8; ++i) iv[i] = static_cast<unsigned char>(tweak >> (8 * i));
  EVP_CIPHER_CTX* ctx = local.ctx;
  int n = 0;
  const bool ok =
      EVP_CIPHER_CTX_copy(ctx, encrypt ? contexts_->encrypt : contexts_->decrypt) == 1 &&
      EVP_CipherInit_ex(ctx, nullptr, nullptr, nullptr, iv, encrypt ? 1 : 0) == 1 &&
      EVP_CipherUpdate(ctx, reinterpret_cast<unsigned char*>(out.data()), &n,
                       reinterpret_cast<const unsigned char*>(in.data()),
                       static_cast<int>(in.size())) == 1 &&
      static_cast<size_t>(n) == in.size();
  if (!ok) std::abort();  // Only a broken precondition (size < 16) gets here.
}

void Xts::Encrypt(uint64_t tweak, std::span<const std::byte> in, std::span<std::byte> out) const {
  Run(true, tweak, in, out);
}

void Xts::Decrypt(uint64_t tweak, std::span<const std::byte> in, std::span<std::byte> out) const {
  Run(false, tweak, in, out);
}

void Xts::EncryptUnits(uint64_t first_unit, std::span<const std::byte> in,
                       std::span<std::byte> out) const {
  for (size_t at = 0; at < in.size(); at += kXtsUnitBytes) {
    Run(true, first_unit + at / kXtsUnitBytes, in.subspan(at, kXtsUnitBytes),
        out.subspan(at, kXtsUnitBytes));
  }
}

void Xts::DecryptUnits(uint64_t first_unit, std::span<const std::byte> in,
                       std::span<std::byte> out) const {
  for (size_t at = 0; at < in.size(); at += kXtsUnitBytes) {
    Run(false, first_unit + at / kXtsUnitBytes, in.subspan(at, kXtsUnitBytes),
        out.subspan(at, kXtsUnitBytes));
  }
}

}  // namespace strata::crypto
