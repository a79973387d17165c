#include "crypto/xts.h"

#include <gcrypt.h>
#include <openssl/evp.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <string>

#include "absl/strings/escaping.h"
#include "util/log.h"

namespace strata::crypto {

namespace {

std::atomic<uint64_t> next_xts_id{1};

// A thread's keyed contexts for the last few Xts objects it used: a context is keyed once per
// thread, then each unit only sets its IV (the tweak). OpenSSL's are copies of the object's
// keyed templates (a copy skips the key schedule); libgcrypt's handle serves both directions.
struct ThreadContexts {
  struct Slot {
    uint64_t id = 0;
    EVP_CIPHER_CTX* ctx[2] = {nullptr, nullptr};  // Decrypt, encrypt.
    gcry_cipher_hd_t gcry = nullptr;
    void Clear() {
      EVP_CIPHER_CTX_free(ctx[0]);
      EVP_CIPHER_CTX_free(ctx[1]);
      ctx[0] = ctx[1] = nullptr;
      if (gcry != nullptr) gcry_cipher_close(gcry);
      gcry = nullptr;
    }
  };
  Slot slots[4];
  unsigned next = 0;
  ~ThreadContexts() {
    for (Slot& s : slots) s.Clear();
  }
};

// The IV of a unit: its number, little-endian, in the first 8 of 16 bytes.
void TweakIv(uint64_t tweak, unsigned char iv[16]) {
  std::memset(iv, 0, 16);
  for (int i = 0; i < 8; ++i) iv[i] = static_cast<unsigned char>(tweak >> (8 * i));
}

// Enciphers with libgcrypt on a keyed handle; false on any error.
bool GcryptRun(gcry_cipher_hd_t h, bool encrypt, uint64_t tweak, std::span<const std::byte> in,
               std::span<std::byte> out) {
  unsigned char iv[16];
  TweakIv(tweak, iv);
  if (gcry_cipher_setiv(h, iv, sizeof(iv)) != 0) return false;
  // libgcrypt works in place when `in` is null; it does not promise overlapping buffers.
  const bool in_place = in.data() == out.data();
  const void* src = in_place ? nullptr : in.data();
  const size_t src_len = in_place ? 0 : in.size();
  const gcry_error_t e = encrypt ? gcry_cipher_encrypt(h, out.data(), out.size(), src, src_len)
                                 : gcry_cipher_decrypt(h, out.data(), out.size(), src, src_len);
  return e == 0;
}

absl::StatusOr<gcry_cipher_hd_t> OpenGcrypt(const unsigned char* key) {
  gcry_cipher_hd_t h = nullptr;
  if (gcry_cipher_open(&h, GCRY_CIPHER_AES256, GCRY_CIPHER_MODE_XTS, 0) != 0) {
    return absl::UnavailableError("libgcrypt has no AES-256-XTS");
  }
  if (gcry_cipher_setkey(h, key, kXtsKeyBytes) != 0) {
    gcry_cipher_close(h);
    return absl::InvalidArgumentError("libgcrypt refused the AES-256-XTS key");
  }
  return h;
}

// IEEE 1619-2007 vector 10 (XTS-AES-256, data unit 0xff), its first 32 bytes.
constexpr char kKatKey[] =
    "2718281828459045235360287471352662497757247093699959574966967627"
    "3141592653589793238462643383279502884197169399375105820974944592";
constexpr char kKatCiphertext[] =
    "1c3b3a102f770386e4836c99e370cf9bea00803f5e482357a4ae12d414a3e63b";

// Initializes libgcrypt and checks that it enciphers as IEEE 1619 says and byte for byte as
// OpenSSL does, ciphertext stealing included. An empty string when it does; else why not.
std::string GcryptSelfTest() {
  if (gcry_check_version(GCRYPT_VERSION) == nullptr) return "libgcrypt is older than its headers";
  // No secure memory: keys live in SecretBytes, and the pool would need mlock limits.
  gcry_control(GCRYCTL_DISABLE_SECMEM, 0);
  gcry_control(GCRYCTL_INITIALIZATION_FINISHED, 0);
  const std::string key = absl::HexStringToBytes(kKatKey);
  absl::StatusOr<gcry_cipher_hd_t> h =
      OpenGcrypt(reinterpret_cast<const unsigned char*>(key.data()));
  if (!h.ok()) return std::string(h.status().message());
  std::string plain(32, '\0');
  for (int i = 0; i < 32; ++i) plain[i] = static_cast<char>(i);
  std::string out(plain.size(), '\0');
  bool ok = GcryptRun(*h, true, 0xff, std::as_bytes(std::span(plain)),
                      std::as_writable_bytes(std::span(out))) &&
            absl::BytesToHexString(out) == kKatCiphertext;
  // A unit of 4096 + 17 bytes against OpenSSL (ciphertext stealing on the tail).
  std::string unit(kXtsUnitBytes + 17, '\0');
  for (size_t i = 0; i < unit.size(); ++i) unit[i] = static_cast<char>(i * 131 + 7);
  std::string theirs(unit.size(), '\0');
  std::string ours(unit.size(), '\0');
  unsigned char iv[16];
  TweakIv(0x0123456789abcdefull, iv);
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  int n = 0;
  ok = ok && ctx != nullptr &&
       EVP_EncryptInit_ex(ctx, EVP_aes_256_xts(), nullptr,
                          reinterpret_cast<const unsigned char*>(key.data()), iv) == 1 &&
       EVP_EncryptUpdate(ctx, reinterpret_cast<unsigned char*>(theirs.data()), &n,
                         reinterpret_cast<const unsigned char*>(unit.data()),
                         static_cast<int>(unit.size())) == 1 &&
       GcryptRun(*h, true, 0x0123456789abcdefull, std::as_bytes(std::span(unit)),
                 std::as_writable_bytes(std::span(ours))) &&
       ours == theirs;
  EVP_CIPHER_CTX_free(ctx);
  gcry_cipher_close(*h);
  return ok ? "" : "libgcrypt's AES-256-XTS failed its known-answer test";
}

// Whether libgcrypt may be used, decided once.
bool GcryptUsable() {
  static const bool usable = [] {
    const std::string why_not = GcryptSelfTest();
    if (!why_not.empty()) STRATA_LOG(kWarning, why_not, "; AES-256-XTS runs on OpenSSL");
    return why_not.empty();
  }();
  return usable;
}

}  // namespace

XtsBackend DefaultXtsBackend() {
  static const XtsBackend chosen = [] {
    const char* forced = std::getenv("STRATA_XTS");
    if (forced != nullptr && std::string(forced) == "openssl") return XtsBackend::kOpenSsl;
    if (GcryptUsable()) return XtsBackend::kGcrypt;
    if (forced != nullptr && std::string(forced) == "gcrypt") {
      STRATA_LOG(kWarning, "STRATA_XTS=gcrypt, but libgcrypt is not usable: using OpenSSL");
    }
    return XtsBackend::kOpenSsl;
  }();
  return chosen;
}

const char* XtsBackendName(XtsBackend backend) {
  if (backend == XtsBackend::kDefault) backend = DefaultXtsBackend();
  return backend == XtsBackend::kGcrypt ? "libgcrypt" : "openssl";
}

// What a key needs: for OpenSSL keyed templates, for libgcrypt the key itself (each thread
// keys a handle of its own).
struct Xts::Contexts {
  XtsBackend backend = XtsBackend::kOpenSsl;
  SecretBytes key;
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

XtsBackend Xts::backend() const { return contexts_->backend; }

absl::StatusOr<std::unique_ptr<Xts>> Xts::Create(const SecretBytes& key, XtsBackend backend) {
  if (key.size() != kXtsKeyBytes) {
    return absl::InvalidArgumentError("an AES-256-XTS key is 64 bytes");
  }
  if (std::memcmp(key.data(), key.data() + 32, 32) == 0) {
    return absl::InvalidArgumentError("the two halves of an XTS key must differ");
  }
  if (backend == XtsBackend::kDefault) backend = DefaultXtsBackend();
  auto contexts = std::make_unique<Contexts>();
  contexts->backend = backend;
  if (backend == XtsBackend::kGcrypt) {
    if (!GcryptUsable()) return absl::UnavailableError("libgcrypt's AES-256-XTS is not usable");
    // Key it once here, so a refused key fails Create rather than a later Encrypt.
    absl::StatusOr<gcry_cipher_hd_t> h = OpenGcrypt(key.data());
    if (!h.ok()) return h.status();
    gcry_cipher_close(*h);
    contexts->key = key;
    return std::unique_ptr<Xts>(new Xts(std::move(contexts)));
  }
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
    slot->Clear();
    slot->id = id_;
  }
  if (contexts_->backend == XtsBackend::kGcrypt) {
    if (slot->gcry == nullptr) {
      absl::StatusOr<gcry_cipher_hd_t> h = OpenGcrypt(contexts_->key.data());
      if (!h.ok()) std::abort();  // Create keyed it already: this cannot be refused.
      slot->gcry = *h;
    }
    // Only a broken precondition (size < 16) fails.
    if (!GcryptRun(slot->gcry, encrypt, tweak, in, out)) std::abort();
    return;
  }
  EVP_CIPHER_CTX*& ctx = slot->ctx[encrypt ? 1 : 0];
  if (ctx == nullptr) {
    ctx = EVP_CIPHER_CTX_new();
    if (ctx == nullptr ||
        EVP_CIPHER_CTX_copy(ctx, encrypt ? contexts_->encrypt : contexts_->decrypt) != 1) {
      std::abort();
    }
  }
  unsigned char iv[16];
  TweakIv(tweak, iv);
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
