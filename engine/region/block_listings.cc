#include "region/block_listings.h"

#include <algorithm>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "region/snapshot_records.h"
#include "util/coding.h"
#include "util/status_macros.h"
#include "xxhash.h"

namespace strata::region {

using volume::ChunkEntry;
using volume::SnapshotTree;

namespace {

inline constexpr uint64_t kMaxListResults = 10000;

absl::StatusOr<uint64_t> ParseToken(const std::string& token) {
  if (token.empty()) return 0;
  uint64_t v = 0;
  if (!absl::SimpleAtoi(token, &v)) {
    return absl::InvalidArgumentError(absl::StrCat("invalid pagination token \"", token, "\""));
  }
  return v;
}

absl::Status CheckMaxResults(uint64_t max_results) {
  if (max_results < 1 || max_results > kMaxListResults) {
    return absl::InvalidArgumentError(
        absl::StrCat("max results must be from 1 to ", kMaxListResults));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> BlockListings::BlockToken(const meta::SnapshotRecord& record,
                                                      const SnapshotTree::Ancestry& ancestry,
                                                      uint64_t block_index) const {
  const uint64_t start = block_index * kApiBlockBytes;
  const uint64_t end = std::min(start + kApiBlockBytes, record.volume_size_bytes);
  std::string material;
  bool any = false;
  const uint64_t first = start / chunk_size_bytes_;
  const uint64_t count = (end - 1) / chunk_size_bytes_ - first + 1;
  STRATA_ASSIGN_OR_RETURN(std::vector<ChunkEntry> entries,
                          tree_.ResolveRange(record.tree, ancestry, first, count));
  for (const ChunkEntry& entry : entries) {
    any |= entry.has_value();
    material += entry.has_value() ? entry->Encode() : std::string(chunk::kChunkKeyBytes, '\0');
  }
  if (!any) return std::string();
  // A chunk larger than a block serves several blocks: name the part too.
  util::PutFixed64(material, chunk_size_bytes_ > kApiBlockBytes ? start % chunk_size_bytes_ : 0);
  const XXH128_hash_t h = XXH3_128bits(material.data(), material.size());
  return absl::StrFormat("%016x%016x", h.high64, h.low64);
}

absl::StatusOr<BlockListing> BlockListings::ListSnapshotBlocks(const std::string& snapshot_id,
                                                               const std::string& next_token,
                                                               uint64_t max_results) {
  STRATA_RETURN_IF_ERROR(CheckMaxResults(max_results));
  STRATA_ASSIGN_OR_RETURN(const uint64_t start_block, ParseToken(next_token));
  STRATA_ASSIGN_OR_RETURN(meta::SnapshotRecord r, FindCompletedSnapshot(tree_, snapshot_id));
  STRATA_ASSIGN_OR_RETURN(SnapshotTree::Ancestry ancestry, tree_.Ancestors(snapshot_id));
  BlockListing listing;
  listing.volume_size_bytes = r.volume_size_bytes;
  // Visit the tree's resolve index in chunk order; the first visible entry per chunk wins.
  std::set<uint64_t> blocks;
  uint64_t last_chunk = UINT64_MAX;
  bool more = false;
  const uint64_t first_chunk = start_block * kApiBlockBytes / chunk_size_bytes_;
  STRATA_RETURN_IF_ERROR(catalog_.Scan(
      meta::ResolveTreePrefix(r.tree), meta::ResolvePrefix(r.tree, first_chunk),
      [&](absl::string_view key, absl::string_view value) {
        const uint64_t c = meta::ResolveKeyChunk(key);
        if (c == last_chunk || !ancestry->contains(meta::ResolveKeySeq(key))) return true;
        last_chunk = c;
        const uint64_t offset = c * chunk_size_bytes_;
        if (offset >= r.volume_size_bytes) return false;
        if (value.empty()) return true;  // Zero chunk.
        const uint64_t chunk_end = std::min(offset + chunk_size_bytes_, r.volume_size_bytes);
        for (uint64_t b = offset / kApiBlockBytes; b * kApiBlockBytes < chunk_end; ++b) {
          if (b < start_block) continue;
          if (blocks.size() == max_results && !blocks.contains(b)) {
            more = true;
            listing.next_token = absl::StrCat(b);
            return false;
          }
          blocks.insert(b);
        }
        return true;
      }));
  (void)more;
  for (uint64_t b : blocks) {
    STRATA_ASSIGN_OR_RETURN(std::string token, BlockToken(r, ancestry, b));
    if (!token.empty()) listing.blocks.push_back({b, token, ""});
  }
  return listing;
}

absl::StatusOr<BlockListing> BlockListings::ListChangedBlocks(const std::string& first_snapshot_id,
                                                              const std::string& second_snapshot_id,
                                                              const std::string& next_token,
                                                              uint64_t max_results) {
  STRATA_RETURN_IF_ERROR(CheckMaxResults(max_results));
  STRATA_ASSIGN_OR_RETURN(const uint64_t start_block, ParseToken(next_token));
  STRATA_ASSIGN_OR_RETURN(meta::SnapshotRecord a, FindCompletedSnapshot(tree_, first_snapshot_id));
  STRATA_ASSIGN_OR_RETURN(meta::SnapshotRecord b, FindCompletedSnapshot(tree_, second_snapshot_id));
  if (a.tree != b.tree) {
    return absl::InvalidArgumentError(
        absl::StrCat("snapshots ", a.id, " and ", b.id, " are not of the same lineage"));
  }
  STRATA_ASSIGN_OR_RETURN(SnapshotTree::Ancestry anc_a, tree_.Ancestors(a.id));
  STRATA_ASSIGN_OR_RETURN(SnapshotTree::Ancestry anc_b, tree_.Ancestors(b.id));
  // Only the deltas on the two paths below the common ancestor can differ.
  std::set<uint64_t> path_seqs;
  for (uint64_t s : *anc_a)
    if (!anc_b->contains(s)) path_seqs.insert(s);
  for (uint64_t s : *anc_b)
    if (!anc_a->contains(s)) path_seqs.insert(s);
  std::set<uint64_t> candidates;
  for (uint64_t seq : path_seqs) {
    STRATA_RETURN_IF_ERROR(
        catalog_.Scan(meta::ManifestPrefix(seq), "", [&](absl::string_view key, absl::string_view) {
          candidates.insert(meta::ManifestKeyChunk(key));
          return true;
        }));
  }
  const uint64_t size = std::max(a.volume_size_bytes, b.volume_size_bytes);
  std::set<uint64_t> changed_blocks;
  for (uint64_t c : candidates) {
    STRATA_ASSIGN_OR_RETURN(ChunkEntry ea, tree_.Resolve(a.tree, a.seq, anc_a, c));
    STRATA_ASSIGN_OR_RETURN(ChunkEntry eb, tree_.Resolve(b.tree, b.seq, anc_b, c));
    if (ea == eb) continue;
    const uint64_t offset = c * chunk_size_bytes_;
    const uint64_t chunk_end = std::min(offset + chunk_size_bytes_, size);
    for (uint64_t blk = offset / kApiBlockBytes; blk * kApiBlockBytes < chunk_end; ++blk) {
      if (blk >= start_block) changed_blocks.insert(blk);
    }
  }
  BlockListing listing;
  listing.volume_size_bytes = b.volume_size_bytes;
  for (uint64_t blk : changed_blocks) {
    if (listing.blocks.size() == max_results) {
      listing.next_token = absl::StrCat(blk);
      break;
    }
    BlockRef ref{blk, "", ""};
    if (blk * kApiBlockBytes < a.volume_size_bytes) {
      STRATA_ASSIGN_OR_RETURN(ref.first_token, BlockToken(a, anc_a, blk));
    }
    if (blk * kApiBlockBytes < b.volume_size_bytes) {
      STRATA_ASSIGN_OR_RETURN(ref.second_token, BlockToken(b, anc_b, blk));
    }
    listing.blocks.push_back(std::move(ref));
  }
  return listing;
}

absl::StatusOr<ChunkListing> BlockListings::ListChunks(const std::string& snapshot_id,
                                                       const std::string& base_snapshot_id) {
  STRATA_ASSIGN_OR_RETURN(meta::SnapshotRecord r, FindCompletedSnapshot(tree_, snapshot_id));
  STRATA_ASSIGN_OR_RETURN(SnapshotTree::Ancestry ancestry, tree_.Ancestors(snapshot_id));
  ChunkListing listing;
  listing.chunk_size_bytes = chunk_size_bytes_;
  listing.volume_size_bytes = r.volume_size_bytes;
  listing.lineage = absl::StrCat(region_name_, "/", r.tree);
  const uint64_t chunk_count = (r.volume_size_bytes + chunk_size_bytes_ - 1) / chunk_size_bytes_;
  if (base_snapshot_id.empty()) {
    // The resolve index in chunk order; the first entry visible from the snapshot wins.
    uint64_t last_chunk = UINT64_MAX;
    STRATA_RETURN_IF_ERROR(catalog_.Scan(
        meta::ResolveTreePrefix(r.tree), "", [&](absl::string_view key, absl::string_view value) {
          const uint64_t c = meta::ResolveKeyChunk(key);
          if (c == last_chunk || !ancestry->contains(meta::ResolveKeySeq(key))) return true;
          last_chunk = c;
          if (c >= chunk_count) return false;
          if (!value.empty()) listing.chunks.push_back({c, false});
          return true;
        }));
    return listing;
  }
  STRATA_ASSIGN_OR_RETURN(meta::SnapshotRecord base,
                          FindCompletedSnapshot(tree_, base_snapshot_id));
  if (base.tree != r.tree) {
    return absl::InvalidArgumentError(
        absl::StrCat("snapshots ", base.id, " and ", r.id, " are not of the same lineage"));
  }
  STRATA_ASSIGN_OR_RETURN(SnapshotTree::Ancestry base_ancestry, tree_.Ancestors(base.id));
  // Only the deltas on the two paths below the common ancestor can differ.
  std::set<uint64_t> candidates;
  for (const auto& [one, other] :
       {std::pair(ancestry, base_ancestry), std::pair(base_ancestry, ancestry)}) {
    for (uint64_t seq : *one) {
      if (other->contains(seq)) continue;
      STRATA_RETURN_IF_ERROR(catalog_.Scan(meta::ManifestPrefix(seq), "",
                                           [&](absl::string_view key, absl::string_view) {
                                             candidates.insert(meta::ManifestKeyChunk(key));
                                             return true;
                                           }));
    }
  }
  // Chunks past the base's end are new; those the base has and the snapshot lacks are zeros.
  const uint64_t base_chunks = (base.volume_size_bytes + chunk_size_bytes_ - 1) / chunk_size_bytes_;
  for (uint64_t c : candidates) {
    if (c >= chunk_count) break;
    STRATA_ASSIGN_OR_RETURN(ChunkEntry now, tree_.Resolve(r.tree, r.seq, ancestry, c));
    ChunkEntry before;
    if (c < base_chunks) {
      STRATA_ASSIGN_OR_RETURN(before, tree_.Resolve(base.tree, base.seq, base_ancestry, c));
    }
    if (now == before) continue;
    listing.chunks.push_back({c, !now.has_value()});
  }
  return listing;
}

}  // namespace strata::region
