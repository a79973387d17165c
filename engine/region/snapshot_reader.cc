#include "region/snapshot_reader.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "util/status_macros.h"

namespace strata::region {

absl::Status SnapshotReader::Read(uint64_t offset_bytes, std::span<std::byte> out) {
  if (offset_bytes > size_bytes() || out.size() > size_bytes() - offset_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(record_.id, ": range ", offset_bytes, "+", out.size(), " is past the end"));
  }
  if (out.empty()) return absl::OkStatus();
  const uint64_t first = offset_bytes / chunk_size_bytes_;
  const uint64_t last = (offset_bytes + out.size() - 1) / chunk_size_bytes_;
  STRATA_ASSIGN_OR_RETURN(
      std::vector<volume::ChunkEntry> entries,
      resolved_.Resolve(tree_, record_.id, record_.tree, ancestry_, first, last - first + 1));
  // Every stored chunk of the range is read at once, whole chunks straight into `out`.
  std::vector<volume::DomainKeys::Piece> pieces;
  for (uint64_t pos = offset_bytes; pos < offset_bytes + out.size();) {
    const uint64_t c = pos / chunk_size_bytes_;
    const uint64_t in_chunk = pos % chunk_size_bytes_;
    const uint64_t n =
        std::min<uint64_t>(chunk_size_bytes_ - in_chunk, offset_bytes + out.size() - pos);
    const std::span<std::byte> piece = out.subspan(pos - offset_bytes, n);
    if (const volume::ChunkEntry& entry = entries[c - first]; entry.has_value()) {
      pieces.push_back({*entry, in_chunk, piece});
    } else {
      std::memset(piece.data(), 0, n);
    }
    pos += n;
  }
  STRATA_RETURN_IF_ERROR(keys_.ReadPieces(chunks_, chunk_size_bytes_, pieces));
  std::optional<meta::SnapshotRecord> now = tree_.Get(record_.id);
  if (!now.has_value() || now->deleted) {
    return absl::NotFoundError(absl::StrCat("snapshot ", record_.id, " was deleted"));
  }
  return absl::OkStatus();
}

}  // namespace strata::region
