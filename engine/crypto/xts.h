#pragma once
// AES-256-XTS (IEEE 1619) through OpenSSL's EVP interface: a 512-bit key whose two halves must
// differ; each data unit is enciphered with its own tweak (the unit number, little-endian, as
// IEEE 1619's data unit sequence number). Units may be any length of at least 16 bytes
// (ciphertext stealing covers lengths that are not a multiple of 16).

#include <cstdint>
#include <memory>
#include <span>

#include "absl/status/statusor.h"
#include "strata/secret.h"

namespace strata::crypto {

inline constexpr size_t kXtsKeyBytes = 64;
// The unit of volume encryption: every 4 KiB of a volume has its own tweak.
inline constexpr size_t kXtsUnitBytes = 4096;

class Xts {
 public:
  // kInvalidArgument unless the key is 64 bytes with distinct halves.
  static absl::StatusOr<std::unique_ptr<Xts>> Create(const SecretBytes& key);
  ~Xts();
  Xts(const Xts&) = delete;
  Xts& operator=(const Xts&) = delete;

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
