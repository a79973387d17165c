#pragma once
// The data keys of a region's encrypted dedup domains, and chunk I/O through them.
//
// A chunk of an encrypted domain is stored as SIV(16) | ciphertext: SIV is the first 16 bytes
// of HMAC-SHA256(fingerprint key, plaintext), the fingerprint key being HMAC-SHA256(data key,
// "strata fingerprint"); the ciphertext is AES-256-XTS under the data key, 4 KiB unit i with
// tweak SIV[0..8) + i. So equal plaintext gives equal bytes within a domain (dedup works), one
// chunk serves any LBA, nothing about it is visible from another domain (other key, other
// fingerprint key), and a read recomputes the SIV: a tampered chunk is an error, never data.

#include <cstdint>
#include <map>
#include <memory>
#include <span>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "chunk/chunk_store.h"
#include "crypto/xts.h"
#include "strata/secret.h"

namespace strata::volume {

inline constexpr size_t kSivBytes = 16;

class DomainKeys {
 public:
  struct Key {
    std::unique_ptr<crypto::Xts> xts;
    SecretBytes fingerprint_key;
  };

  // Registers domain `domain`'s 64-byte data key (again: no change).
  [[nodiscard]] absl::Status Add(uint32_t domain, const SecretBytes& data_key);
  // Records why a domain's key could not be unwrapped; reads of it fail with that reason.
  void SetUnavailable(uint32_t domain, const absl::Status& why);
  // The key of an encrypted domain, or the reason there is none.
  absl::StatusOr<std::shared_ptr<const Key>> Get(uint32_t domain) const;

  // Reads chunk `key` into `out` (the chunk size), decrypting an encrypted domain's chunk.
  [[nodiscard]] absl::Status ReadChunk(chunk::ChunkStore& store, const chunk::ChunkKey& key,
                                       std::span<std::byte> out) const;
  // Reads chunks keys[i] into outs[i] as ReadChunk does, all at once where the store allows.
  [[nodiscard]] absl::Status ReadChunks(chunk::ChunkStore& store,
                                        std::span<const chunk::ChunkKey> keys,
                                        std::span<const std::span<std::byte>> outs) const;
  // A piece of a read: bytes [offset_in_chunk, offset_in_chunk + out.size()) of chunk `key`.
  struct Piece {
    chunk::ChunkKey key;
    uint64_t offset_in_chunk = 0;
    std::span<std::byte> out;
  };
  // Reads every piece at once, as ReadChunks: a piece that is a whole chunk (`chunk_size_bytes`)
  // straight into its `out`, a part of one through a buffer.
  [[nodiscard]] absl::Status ReadPieces(chunk::ChunkStore& store, uint64_t chunk_size_bytes,
                                        std::span<const Piece> pieces) const;
  // Stores plaintext `data` in `domain`, encrypting it for an encrypted domain.
  [[nodiscard]] absl::StatusOr<chunk::ChunkKey> PutChunk(chunk::ChunkStore& store, uint32_t domain,
                                                         std::span<const std::byte> data) const;

 private:
  // Decrypts `stored` (synthetic IV, then ciphertext) of chunk `key` into `out` and checks it.
  absl::Status Decipher(const chunk::ChunkKey& key, std::span<const std::byte> stored,
                        std::span<std::byte> out) const;

  mutable absl::Mutex mu_;
  std::map<uint32_t, std::shared_ptr<const Key>> keys_ ABSL_GUARDED_BY(mu_);
  std::map<uint32_t, absl::Status> unavailable_ ABSL_GUARDED_BY(mu_);
};

}  // namespace strata::volume
