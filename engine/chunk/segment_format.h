#pragma once
// Segment files: append-only files of chunk records. docs/formats/segment.md.
//
// File name: "seg-" + 16 hex digits (segment id) + ".dat"; no file header.
// Record: magic(4) "STRC" | checksum(8, XXH3-64 of every byte after this field) |
//         key(22, chunk/chunk_key.h) | flags(1) | raw_length(4) | stored_length(4) |
//         payload(stored_length)
// flags bit 0: payload is zstd-compressed. Records are not aligned; a torn or unreferenced
// record is dead space that compaction reclaims.

#include <cstddef>
#include <cstdint>
#include <string>

#include "chunk/chunk_key.h"

namespace strata::chunk {

inline constexpr char kRecordMagic[4] = {'S', 'T', 'R', 'C'};
inline constexpr size_t kRecordChecksumOffset = 4;
inline constexpr size_t kRecordKeyOffset = 12;
inline constexpr size_t kRecordFlagsOffset = kRecordKeyOffset + kChunkKeyBytes;
inline constexpr size_t kRecordRawLengthOffset = kRecordFlagsOffset + 1;
inline constexpr size_t kRecordStoredLengthOffset = kRecordRawLengthOffset + 4;
inline constexpr size_t kRecordHeaderBytes = kRecordStoredLengthOffset + 4;
static_assert(kRecordHeaderBytes == 4 + 8 + 22 + 1 + 4 + 4);
inline constexpr uint8_t kRecordFlagCompressed = 1;

// A segment grows to about this size before a new one starts.
inline constexpr uint64_t kSegmentTargetBytes = 64ull << 20;

std::string SegmentFileName(uint64_t segment_id);
// Parses "seg-<16 hex>.dat"; false for any other name.
bool ParseSegmentFileName(const std::string& name, uint64_t& segment_id);

}  // namespace strata::chunk
