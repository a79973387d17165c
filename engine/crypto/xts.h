#pragma once
// AES-256-XTS (IEEE 1619): a 512-bit key whose two halves must differ; each data unit is
// enciphered with its own tweak (the unit number, little-endian, as IEEE 1619's data unit
// sequence number). Units may be any length of at least 16 bytes (ciphertext stealing covers
// lengths that are not a multiple of 16).
//
// Two implementations give byte-identical ciphertext, so data written through one reads back
// through the other: libgcrypt's (VAES/AVX2 code paths: about twice OpenSSL 3.0's speed on
// these CPUs, bench/xts_bench.cc) and OpenSSL's EVP. The process picks one once, at first use:
// libgcrypt when it initializes and passes a known-answer test (IEEE 1619 vector 10), else
// OpenSSL; STRATA_XTS=openssl or STRATA_XTS=gcrypt forces one.

#include <cstdint>
#include <memory>
#include <span>

#include "absl/status/statusor.h"
#include "strata/secret.h"

namespace strata::crypto {

inline constexpr size_t kXtsKeyBytes = 64;
// The unit of volume encryption: every 4 KiB of a volume has its own tweak.
inline constexpr size_t kXtsUnitBytes = 4096;

enum class XtsBackend {
  kDefault,  // The process's choice (DefaultXtsBackend()).
  kGcrypt,   // libgcrypt.
  kOpenSsl,  // OpenSSL's EVP.
};

// The backend Create uses by default, chosen once per process (see the top of this file).
XtsBackend DefaultXtsBackend();
// "libgcrypt" or "openssl".
const char* XtsBackendName(XtsBackend backend);

class Xts {
 public:
  // kInvalidArgument unless the key is 64 bytes with distinct halves; kUnavailable when
  // `backend` is kGcrypt and libgcrypt failed to initialize or its self-test.
  static absl::StatusOr<std::unique_ptr<Xts>> Create(const SecretBytes& key,
                                                     XtsBackend backend = XtsBackend::kDefault);
  ~Xts();
  Xts(const Xts&) = delete;
  Xts& operator=(const Xts&) = delete;

  // kGcrypt or kOpenSsl: the implementation this key runs on.
  XtsBackend backend() const;

  // `out` may alias `in`. REQUIRES: in.size() == out.size() >= 16. Thread-safe.
  void Encrypt(uint64_t tweak, std::span<const std::byte> in, std::span<std::byte> out) const;
  void Decrypt(uint64_t tweak, std::span<const std::byte> in, std::span<std::byte> out) const;
  // Enciphers consecutive kXtsUnitBytes units, the first with tweak `first_unit`.
  // REQUIRES: size a multiple of kXtsUnitBytes.
  void EncryptUnits(uint64_t first_unit, std::span<const std::byte> in,
                    std::span<std::byte> out) const;
  void DecryptUnits(uint64_t first_unit, std::span<const std::byte> in,
                    std::span<std::byte> out) const;

 private:
  struct Contexts;
  explicit Xts(std::unique_ptr<Contexts> contexts);
  void Run(bool encrypt, uint64_t tweak, std::span<const std::byte> in,
           std::span<std::byte> out) const;
  std::unique_ptr<Contexts> contexts_;
  const uint64_t id_;  // Unique per process: threads cache keyed contexts by it.
};

}  // namespace strata::crypto
