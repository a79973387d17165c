#include "crypto/xts.h"

#include <openssl/evp.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <iterator>

namespace strata::crypto {

namespace {

std::atomic<uint64_t> next_xts_id{1};

// A thread's keyed contexts for the last few Xts objects it used: a context is keyed once per
// thread (a copy of the template), then each unit only sets its IV.
struct ThreadContexts {
  struct Slot {
    uint64_t id = 0;
    EVP_CIPHER_CTX* ctx[2] = {nullptr, nullptr};  // Decrypt, encrypt.
  };
  Slot slots[4];
  unsigned next = 0;
  ~ThreadContexts() {
    for (Slot& s : slots) {
      EVP_CIPHER_CTX_free(s.ctx[0]);
      EVP_CIPHER_CTX_free(s.ctx[1]);
    }
  }
};

}  // namespace

// Keyed templates, copied per call into a thread's own context (a copy skips the key schedule).
struct Xts::Contexts {
  EVP_CIPHER_CTX* encrypt = nullptr;
  EVP_CIPHER_CTX* decrypt = nullptr;
  ~Contexts() {
    EVP_CIPHER_CTX_free(encrypt);
    EVP_CIPHER_CTX_free(decrypt);
  }
};

Xts::Xts(std::unique_ptr<Contexts> contexts)
    : contexts_(std::move(contexts)), id_(next_xts_id.fetch_add(1)) {}
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
  thread_local ThreadContexts local;
  ThreadContexts::Slot* slot = nullptr;
  for (ThreadContexts::Slot& s : local.slots) {
    if (s.id == id_) slot = &s;
  }
  if (slot == nullptr) {
    slot = &local.slots[local.next++ % std::size(local.slots)];
    for (EVP_CIPHER_CTX*& c : slot->ctx) {
      EVP_CIPHER_CTX_free(c);
      c = nullptr;
    }
    slot->id = id_;
  }
  EVP_CIPHER_CTX*& ctx = slot->ctx[encrypt ? 1 : 0];
  if (ctx == nullptr) {
    ctx = EVP_CIPHER_CTX_new();
    if (ctx == nullptr ||
        EVP_CIPHER_CTX_copy(ctx, encrypt ? contexts_->encrypt : contexts_->decrypt) != 1) {
      std::abort();
    }
  }
  unsigned char iv[16] = {};
  for (int i = 0; i < 8; ++i) iv[i] = static_cast<unsigned char>(tweak >> (8 * i));
  int n = 0;
  const bool ok = EVP_CipherInit_ex(ctx, nullptr, nullptr, nullptr, iv, encrypt ? 1 : 0) == 1 &&
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
