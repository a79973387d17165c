#pragma once
// The chunk index, in the catalog: "c/" + chunk key -> ChunkLocation (where the chunk is, and
// how many manifest entries reference it). docs/formats/catalog.md. Both chunk stores keep it
// there, so that refcounts change in the same atomic batch as the manifests that hold them.

#include <functional>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "chunk/chunk_key.h"
#include "chunk/chunk_store.h"
#include "meta/catalog.h"

namespace strata::chunk {

inline constexpr absl::string_view kIndexPrefix = "c/";
std::string IndexKey(const ChunkKey& key);

// Decodes the index entry of `key`; a corrupt one is kDataLoss naming the chunk.
absl::StatusOr<ChunkLocation> DecodeIndexEntry(const ChunkKey& key, absl::string_view value);
// The entry of `key`, or nullopt when the index has none.
absl::StatusOr<std::optional<ChunkLocation>> LookupIndexEntry(meta::Catalog& catalog,
                                                              const ChunkKey& key);
// Visits every entry in key order; a corrupt entry stops the scan with kDataLoss.
absl::Status ScanIndex(meta::Catalog& catalog, const ChunkStore::ChunkVisitor& visit);

}  // namespace strata::chunk
