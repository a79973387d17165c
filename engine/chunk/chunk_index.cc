// The chunk index: keys, lookups and scans.
#include "chunk/chunk_index.h"

#include "absl/strings/str_cat.h"
#include "util/status_macros.h"

namespace strata::chunk {

std::string IndexKey(const ChunkKey& key) { return absl::StrCat(kIndexPrefix, key.Encode()); }

absl::StatusOr<ChunkLocation> DecodeIndexEntry(const ChunkKey& key, absl::string_view value) {
  std::optional<ChunkLocation> loc = ChunkLocation::Decode(value);
  if (!loc.has_value()) {
    return absl::DataLossError(
        absl::StrCat("catalog: corrupt index entry of chunk ", key.ToString()));
  }
  return *loc;
}

absl::StatusOr<std::optional<ChunkLocation>> LookupIndexEntry(meta::Catalog& catalog,
                                                              const ChunkKey& key) {
  STRATA_ASSIGN_OR_RETURN(std::optional<std::string> value, catalog.Get(IndexKey(key)));
  if (!value.has_value()) return std::nullopt;
  return DecodeIndexEntry(key, *value);
}

absl::Status ScanIndex(meta::Catalog& catalog, const ChunkStore::ChunkVisitor& visit) {
  absl::Status corrupt;
  STRATA_RETURN_IF_ERROR(
      catalog.Scan(kIndexPrefix, "", [&](absl::string_view k, absl::string_view v) {
        std::optional<ChunkKey> key = ChunkKey::Decode(k.substr(kIndexPrefix.size()));
        std::optional<ChunkLocation> loc = ChunkLocation::Decode(v);
        if (!key.has_value() || !loc.has_value()) {
          corrupt = absl::DataLossError("catalog: corrupt chunk index entry");
          return false;
        }
        visit(*key, *loc);
        return true;
      }));
  return corrupt;
}

}  // namespace strata::chunk
