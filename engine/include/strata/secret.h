#pragma once
// Bytes that must not outlive their use: zeroed (OPENSSL_cleanse) when destroyed or reassigned.
// Never logged; error messages name keys by id, never by value.

#include <cstddef>
#include <span>
#include <string>

namespace strata {

class SecretBytes {
 public:
  SecretBytes() = default;
  explicit SecretBytes(size_t n) : bytes_(n, '\0') {}
  explicit SecretBytes(std::string bytes) : bytes_(std::move(bytes)) {}
  SecretBytes(const SecretBytes& other) : bytes_(other.bytes_) {}
  SecretBytes& operator=(const SecretBytes& other);
  SecretBytes(SecretBytes&& other) noexcept;
  SecretBytes& operator=(SecretBytes&& other) noexcept;
  ~SecretBytes();

  size_t size() const { return bytes_.size(); }
  bool empty() const { return bytes_.empty(); }
  const unsigned char* data() const {
    return reinterpret_cast<const unsigned char*>(bytes_.data());
  }
  unsigned char* data() { return reinterpret_cast<unsigned char*>(bytes_.data()); }
  std::span<const std::byte> span() const { return std::as_bytes(std::span(bytes_)); }
  // The bytes as a string (for wire formats that carry a plaintext key, e.g. GenerateDataKey).
  const std::string& str() const { return bytes_; }
  bool operator==(const SecretBytes& other) const { return bytes_ == other.bytes_; }

 private:
  void Wipe();
  std::string bytes_;
};

// Fills `n` bytes from OpenSSL's CSPRNG.
SecretBytes RandomSecret(size_t n);
std::string RandomBytes(size_t n);

}  // namespace strata
