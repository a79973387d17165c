#pragma once
// A chunk record: how a chunk is stored, in a segment file or as a RADOS object of its own.
// Layout in segment_format.h (docs/formats/segment.md): a header naming the chunk, its lengths
// and an XXH3-64 checksum, then the payload (zstd-compressed when that helped).

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "chunk/chunk_key.h"

namespace strata::chunk {

// The record of `data` under `key`, compressed when `compress` and it helps.
std::vector<std::byte> MakeRecord(const ChunkKey& key, std::span<const std::byte> data,
                                  bool compress);
// Fills in the header of `record`, whose payload (`flags` says how it is stored) is in place.
void SealRecord(const ChunkKey& key, uint8_t flags, uint32_t raw_length,
                std::span<std::byte> record);
// Verifies `record` (magic, checksum, key, lengths: `record` is exactly one record) and fills
// `out` (the chunk's size) with its bytes. Errors are kDataLoss naming the chunk and `where`.
absl::Status DecodeRecord(const ChunkKey& key, std::span<const std::byte> record,
                          std::span<std::byte> out, absl::string_view where);
// The header fields of a record of at least kRecordHeaderBytes.
struct RecordHeader {
  uint8_t flags = 0;
  uint32_t raw_length = 0;
  uint32_t stored_length = 0;
};
RecordHeader ReadRecordHeader(std::span<const std::byte> record);

}  // namespace strata::chunk
