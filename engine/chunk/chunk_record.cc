// Chunk records: build, seal, verify and decode.
#include "chunk/chunk_record.h"

#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "chunk/segment_format.h"
#include "xxhash.h"
#include "zstd.h"

namespace strata::chunk {
namespace {

uint64_t RecordChecksum(std::span<const std::byte> record) {
  return XXH3_64bits(record.data() + kRecordKeyOffset, record.size() - kRecordKeyOffset);
}

}  // namespace

std::vector<std::byte> MakeRecord(const ChunkKey& key, std::span<const std::byte> data,
                                  bool compress) {
  // The header is sealed last; the payload is appended, not first zeroed then copied.
  std::vector<std::byte> record;
  record.reserve(kRecordHeaderBytes + data.size());
  record.resize(kRecordHeaderBytes);
  uint8_t flags = 0;
  if (compress) {
    std::vector<std::byte> packed(ZSTD_compressBound(data.size()));
    const size_t n = ZSTD_compress(packed.data(), packed.size(), data.data(), data.size(), 1);
    if (!ZSTD_isError(n) && n < data.size()) {
      flags |= kRecordFlagCompressed;
      record.insert(record.end(), packed.begin(), packed.begin() + static_cast<ptrdiff_t>(n));
    }
  }
  if ((flags & kRecordFlagCompressed) == 0) record.insert(record.end(), data.begin(), data.end());
  SealRecord(key, flags, static_cast<uint32_t>(data.size()), record);
  return record;
}

void SealRecord(const ChunkKey& key, uint8_t flags, uint32_t raw_length,
                std::span<std::byte> record) {
  const uint32_t stored = static_cast<uint32_t>(record.size() - kRecordHeaderBytes);
  std::memcpy(record.data(), kRecordMagic, 4);
  const std::string encoded = key.Encode();
  std::memcpy(record.data() + kRecordKeyOffset, encoded.data(), kChunkKeyBytes);
  record[kRecordFlagsOffset] = static_cast<std::byte>(flags);
  std::memcpy(record.data() + kRecordRawLengthOffset, &raw_length, 4);
  std::memcpy(record.data() + kRecordStoredLengthOffset, &stored, 4);
  const uint64_t checksum = RecordChecksum(record);
  std::memcpy(record.data() + kRecordChecksumOffset, &checksum, 8);
}

RecordHeader ReadRecordHeader(std::span<const std::byte> record) {
  RecordHeader header;
  header.flags = static_cast<uint8_t>(record[kRecordFlagsOffset]);
  std::memcpy(&header.raw_length, record.data() + kRecordRawLengthOffset, 4);
  std::memcpy(&header.stored_length, record.data() + kRecordStoredLengthOffset, 4);
  return header;
}

absl::Status DecodeRecord(const ChunkKey& key, std::span<const std::byte> record,
                          std::span<std::byte> out, absl::string_view where) {
  auto corrupt = [&](absl::string_view what) {
    return absl::DataLossError(absl::StrCat("chunk ", key.ToString(), " in ", where, ": ", what));
  };
  if (record.size() < kRecordHeaderBytes) return corrupt("record cut short");
  if (std::memcmp(record.data(), kRecordMagic, 4) != 0) return corrupt("bad record magic");
  uint64_t checksum = 0;
  std::memcpy(&checksum, record.data() + kRecordChecksumOffset, 8);
  if (checksum != RecordChecksum(record)) return corrupt("checksum mismatch");
  const std::string stored_key(reinterpret_cast<const char*>(record.data() + kRecordKeyOffset),
                               kChunkKeyBytes);
  if (stored_key != key.Encode()) return corrupt("record holds another chunk");
  const RecordHeader header = ReadRecordHeader(record);
  if (header.raw_length != out.size() ||
      header.stored_length != record.size() - kRecordHeaderBytes) {
    return corrupt("length mismatch");
  }
  auto payload = record.subspan(kRecordHeaderBytes);
  if ((header.flags & kRecordFlagCompressed) == 0) {
    std::memcpy(out.data(), payload.data(), out.size());
    return absl::OkStatus();
  }
  const size_t n = ZSTD_decompress(out.data(), out.size(), payload.data(), payload.size());
  if (ZSTD_isError(n) || n != out.size()) return corrupt("cannot decompress");
  return absl::OkStatus();
}

}  // namespace strata::chunk
