#pragma once
// Fixed-width little-endian and big-endian encoding for on-disk records and catalog keys.
// Big-endian integers in keys make RocksDB's bytewise order equal numeric order.

#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

#include "absl/strings/string_view.h"

namespace strata::util {

inline void PutFixed16(std::string& out, uint16_t v) {
  out.append(reinterpret_cast<const char*>(&v), 2);
}
inline void PutFixed32(std::string& out, uint32_t v) {
  out.append(reinterpret_cast<const char*>(&v), 4);
}
inline void PutFixed64(std::string& out, uint64_t v) {
  out.append(reinterpret_cast<const char*>(&v), 8);
}
inline void PutBigEndian64(std::string& out, uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<char>(v >> shift));
}
inline uint64_t DecodeBigEndian64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}
inline void PutLengthPrefixed(std::string& out, absl::string_view s) {
  PutFixed32(out, static_cast<uint32_t>(s.size()));
  out.append(s.data(), s.size());
}

// Reads fixed-width values from a byte string; every getter fails (returns false) rather than
// reading past the end, so a truncated or corrupt record is detected, never over-read.
class Decoder {
 public:
  explicit Decoder(absl::string_view in) : in_(in) {}
  bool GetFixed16(uint16_t& v) { return GetRaw(&v, 2); }
  bool GetFixed32(uint32_t& v) { return GetRaw(&v, 4); }
  bool GetFixed64(uint64_t& v) { return GetRaw(&v, 8); }
  bool GetBool(bool& v) {
    uint8_t b = 0;
    if (!GetRaw(&b, 1) || b > 1) return false;
    v = b == 1;
    return true;
  }
  bool GetLengthPrefixed(std::string& s) {
    uint32_t n = 0;
    if (!GetFixed32(n) || n > in_.size()) return false;
    s.assign(in_.data(), n);
    in_.remove_prefix(n);
    return true;
  }
  bool GetBytes(size_t n, std::string& s) {
    if (n > in_.size()) return false;
    s.assign(in_.data(), n);
    in_.remove_prefix(n);
    return true;
  }
  bool done() const { return in_.empty(); }

 private:
  bool GetRaw(void* dst, size_t n) {
    if (in_.size() < n) return false;
    std::memcpy(dst, in_.data(), n);
    in_.remove_prefix(n);
    return true;
  }
  absl::string_view in_;
};

}  // namespace strata::util
