#include "volume/domain_keys.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cstring>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "util/status_macros.h"

namespace strata::volume {
namespace {

void Hmac(const SecretBytes& key, std::span<const std::byte> data, unsigned char out[32]) {
  unsigned int n = 32;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), out, &n);
}

uint64_t TweakBase(const unsigned char* siv) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | siv[i];
  return v;
}

}  // namespace

absl::Status DomainKeys::Add(uint32_t domain, const SecretBytes& data_key) {
  auto key = std::make_shared<Key>();
  absl::StatusOr<std::unique_ptr<crypto::Xts>> xts = crypto::Xts::Create(data_key);
  if (!xts.ok()) return xts.status();
  key->xts = std::move(*xts);
  key->fingerprint_key = SecretBytes(32);
  const std::string label = "strata fingerprint";
  Hmac(data_key, std::as_bytes(std::span(label)), key->fingerprint_key.data());
  absl::MutexLock lock(&mu_);
  keys_[domain] = std::move(key);
  unavailable_.erase(domain);
  return absl::OkStatus();
}

void DomainKeys::SetUnavailable(uint32_t domain, const absl::Status& why) {
  absl::MutexLock lock(&mu_);
  if (keys_.count(domain) == 0) unavailable_[domain] = why;
}

absl::StatusOr<std::shared_ptr<const DomainKeys::Key>> DomainKeys::Get(uint32_t domain) const {
  absl::MutexLock lock(&mu_);
  auto it = keys_.find(domain);
  if (it != keys_.end()) return it->second;
  auto why = unavailable_.find(domain);
  if (why != unavailable_.end()) {
    return absl::Status(why->second.code(),
                        absl::StrCat("the data key of encryption domain ", domain,
                                     " is not available: ", why->second.message()));
  }
  return absl::FailedPreconditionError(
      absl::StrCat("the data key of encryption domain ", domain, " is not loaded"));
}

absl::Status DomainKeys::ReadChunk(chunk::ChunkStore& store, const chunk::ChunkKey& key,
                                   std::span<std::byte> out) const {
  return ReadChunks(store, std::span(&key, 1), std::span(&out, 1));
}

absl::Status DomainKeys::ReadChunks(chunk::ChunkStore& store, std::span<const chunk::ChunkKey> keys,
                                    std::span<const std::span<std::byte>> outs) const {
  // Encrypted chunks are read whole (IV and ciphertext) into one buffer first.
  size_t stored_bytes = 0;
  for (size_t i = 0; i < keys.size(); ++i) {
    if (keys[i].domain != chunk::kPlaintextDomain) stored_bytes += kSivBytes + outs[i].size();
  }
  const auto stored = std::make_unique_for_overwrite<std::byte[]>(stored_bytes);
  std::vector<std::span<std::byte>> targets(outs.begin(), outs.end());
  for (size_t i = 0, at = 0; i < keys.size(); ++i) {
    if (keys[i].domain == chunk::kPlaintextDomain) continue;
    targets[i] = std::span(stored.get() + at, kSivBytes + outs[i].size());
    at += targets[i].size();
  }
  STRATA_RETURN_IF_ERROR(store.ReadMany(keys, targets));
  for (size_t i = 0; i < keys.size(); ++i) {
    if (keys[i].domain != chunk::kPlaintextDomain) {
      STRATA_RETURN_IF_ERROR(Decipher(keys[i], targets[i], outs[i]));
    }
  }
  return absl::OkStatus();
}

absl::Status DomainKeys::ReadPieces(chunk::ChunkStore& store, uint64_t chunk_size_bytes,
                                    std::span<const Piece> pieces) const {
  size_t partial = 0;
  for (const Piece& piece : pieces) partial += piece.out.size() != chunk_size_bytes;
  const auto scratch = std::make_unique_for_overwrite<std::byte[]>(partial * chunk_size_bytes);
  std::vector<chunk::ChunkKey> keys;
  std::vector<std::span<std::byte>> outs;
  keys.reserve(pieces.size());
  outs.reserve(pieces.size());
  for (size_t i = 0, next = 0; i < pieces.size(); ++i) {
    keys.push_back(pieces[i].key);
    if (pieces[i].out.size() == chunk_size_bytes) {
      outs.push_back(pieces[i].out);
    } else {
      outs.push_back(std::span(scratch.get() + chunk_size_bytes * next++, chunk_size_bytes));
    }
  }
  STRATA_RETURN_IF_ERROR(ReadChunks(store, keys, outs));
  for (size_t i = 0; i < pieces.size(); ++i) {
    if (outs[i].data() != pieces[i].out.data()) {
      std::memcpy(pieces[i].out.data(), outs[i].data() + pieces[i].offset_in_chunk,
                  pieces[i].out.size());
    }
  }
  return absl::OkStatus();
}

absl::Status DomainKeys::Decipher(const chunk::ChunkKey& key, std::span<const std::byte> stored,
                                  std::span<std::byte> out) const {
  absl::StatusOr<std::shared_ptr<const Key>> k = Get(key.domain);
  if (!k.ok()) return k.status();
  const auto* siv = reinterpret_cast<const unsigned char*>(stored.data());
  const uint64_t base = TweakBase(siv);
  for (size_t at = 0; at < out.size(); at += crypto::kXtsUnitBytes) {
    const size_t n = std::min(crypto::kXtsUnitBytes, out.size() - at);
    (*k)->xts->Decrypt(base + at / crypto::kXtsUnitBytes, stored.subspan(kSivBytes + at, n),
                       out.subspan(at, n));
  }
  unsigned char check[32];
  Hmac((*k)->fingerprint_key, out, check);
  if (CRYPTO_memcmp(check, siv, kSivBytes) != 0) {
    std::memset(out.data(), 0, out.size());
    return absl::DataLossError(absl::StrCat(
        "chunk ", key.ToString(), " does not decrypt to its synthetic IV: tampered or corrupt"));
  }
  return absl::OkStatus();
}

absl::StatusOr<chunk::ChunkKey> DomainKeys::PutChunk(chunk::ChunkStore& store, uint32_t domain,
                                                     std::span<const std::byte> data) const {
  if (domain == chunk::kPlaintextDomain) return store.Put(domain, data);
  absl::StatusOr<std::shared_ptr<const Key>> k = Get(domain);
  if (!k.ok()) return k.status();
  const auto bytes = std::make_unique_for_overwrite<std::byte[]>(kSivBytes + data.size());
  const std::span<std::byte> stored(bytes.get(), kSivBytes + data.size());
  unsigned char mac[32];
  Hmac((*k)->fingerprint_key, data, mac);
  std::memcpy(stored.data(), mac, kSivBytes);
  const uint64_t base = TweakBase(mac);
  for (size_t at = 0; at < data.size(); at += crypto::kXtsUnitBytes) {
    const size_t n = std::min(crypto::kXtsUnitBytes, data.size() - at);
    (*k)->xts->Encrypt(base + at / crypto::kXtsUnitBytes, data.subspan(at, n),
                       stored.subspan(kSivBytes + at, n));
  }
  return store.Put(domain, stored);
}

}  // namespace strata::volume
