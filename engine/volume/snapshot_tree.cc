#include "volume/snapshot_tree.h"

#include <algorithm>
#include <functional>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "util/status_macros.h"

namespace strata::volume {

std::string EncodeEntry(const ChunkEntry& entry) {
  return entry.has_value() ? entry->Encode() : std::string();
}

absl::StatusOr<ChunkEntry> DecodeEntry(absl::string_view bytes) {
  if (bytes.empty()) return ChunkEntry();
  std::optional<chunk::ChunkKey> key = chunk::ChunkKey::Decode(bytes);
  if (!key.has_value()) return absl::DataLossError("catalog: corrupt manifest entry");
  return ChunkEntry(*key);
}

absl::Status SnapshotTree::Load() {
  absl::flat_hash_map<std::string, meta::SnapshotRecord> records;
  absl::Status corrupt;
  STRATA_RETURN_IF_ERROR(
      catalog_->Scan(meta::kSnapshotPrefix, "", [&](absl::string_view key, absl::string_view v) {
        absl::StatusOr<meta::SnapshotRecord> r = meta::SnapshotRecord::Decode(v);
        if (!r.ok()) {
          corrupt = absl::DataLossError(absl::StrCat(r.status().message(), " (key ", key, ")"));
          return false;
        }
        records[r->id] = *std::move(r);
        return true;
      }));
  STRATA_RETURN_IF_ERROR(corrupt);
  absl::MutexLock lock(&mu_);
  records_ = std::move(records);
  ancestry_.clear();
  return absl::OkStatus();
}

std::optional<meta::SnapshotRecord> SnapshotTree::Get(const std::string& id) const {
  absl::MutexLock lock(&mu_);
  auto it = records_.find(id);
  if (it == records_.end()) return std::nullopt;
  return it->second;
}

std::vector<meta::SnapshotRecord> SnapshotTree::All() const {
  absl::MutexLock lock(&mu_);
  std::vector<meta::SnapshotRecord> out;
  out.reserve(records_.size());
  for (const auto& [id, r] : records_) out.push_back(r);
  return out;
}

std::vector<meta::SnapshotRecord> SnapshotTree::Children(const std::string& id) const {
  absl::MutexLock lock(&mu_);
  std::vector<meta::SnapshotRecord> out;
  for (const auto& [child_id, r] : records_) {
    if (r.parent_id == id && r.state != meta::SnapshotRecordState::kError) out.push_back(r);
  }
  return out;
}

void SnapshotTree::Put(const meta::SnapshotRecord& record) {
  absl::MutexLock lock(&mu_);
  auto it = records_.find(record.id);
  if (it != records_.end() && it->second.parent_id != record.parent_id) ancestry_.clear();
  records_[record.id] = record;
}

void SnapshotTree::Erase(const std::string& id) {
  absl::MutexLock lock(&mu_);
  records_.erase(id);
  ancestry_.clear();
}

absl::StatusOr<SnapshotTree::Ancestry> SnapshotTree::Ancestors(const std::string& id) const {
  absl::MutexLock lock(&mu_);
  if (auto it = ancestry_.find(id); it != ancestry_.end()) return it->second;
  auto seqs = std::make_shared<absl::flat_hash_set<uint64_t>>();
  // Bounded by the number of snapshots: a parent link always points to a lower seq.
  for (std::string cursor = id; !cursor.empty();) {
    auto it = records_.find(cursor);
    if (it == records_.end()) {
      return absl::NotFoundError(absl::StrCat("snapshot ", cursor, " not found"));
    }
    STRATA_CHECK(seqs->insert(it->second.seq).second);
    cursor = it->second.parent_id;
  }
  Ancestry ancestry = std::move(seqs);
  ancestry_[id] = ancestry;
  return ancestry;
}

absl::StatusOr<ChunkEntry> SnapshotTree::Resolve(const std::string& id,
                                                 uint64_t chunk_index) const {
  std::optional<meta::SnapshotRecord> record = Get(id);
  if (!record.has_value()) return absl::NotFoundError(absl::StrCat("snapshot ", id, " not found"));
  STRATA_ASSIGN_OR_RETURN(Ancestry ancestry, Ancestors(id));
  return Resolve(record->tree, record->seq, ancestry, chunk_index);
}

absl::StatusOr<ChunkEntry> SnapshotTree::Resolve(uint64_t tree, uint64_t seq,
                                                 const Ancestry& ancestry,
                                                 uint64_t chunk_index) const {
  std::optional<std::string> found;
  STRATA_RETURN_IF_ERROR(catalog_->Scan(meta::ResolvePrefix(tree, chunk_index),
                                        meta::ResolveKey(tree, chunk_index, seq),
                                        [&](absl::string_view key, absl::string_view value) {
                                          if (!ancestry->contains(meta::ResolveKeySeq(key)))
                                            return true;
                                          found.emplace(value);
                                          return false;
                                        }));
  if (!found.has_value()) return ChunkEntry();
  return DecodeEntry(*found);
}

}  // namespace strata::volume

namespace strata::volume {

absl::StatusOr<std::vector<ChunkEntry>> SnapshotTree::ResolveRange(uint64_t tree,
                                                                   const Ancestry& ancestry,
                                                                   uint64_t first_chunk,
                                                                   uint64_t count) const {
  std::vector<ChunkEntry> out(count);
  if (count * ancestry->size() <= kResolveByKeysLimit) {
    // Every key an entry of the range can have, fetched at once (one round trip on RADOS,
    // where a scan costs two and reads a whole page of the tree's entries): per chunk, the
    // entry of the newest snapshot of the line wins, as in the index's order.
    std::vector<uint64_t> seqs(ancestry->begin(), ancestry->end());
    std::sort(seqs.begin(), seqs.end(), std::greater<>());
    std::vector<std::string> keys;
    keys.reserve(count * seqs.size());
    for (uint64_t i = 0; i < count; ++i) {
      for (uint64_t seq : seqs) keys.push_back(meta::ResolveKey(tree, first_chunk + i, seq));
    }
    STRATA_ASSIGN_OR_RETURN(std::vector<std::optional<std::string>> values,
                            catalog_->GetMany(keys));
    for (uint64_t i = 0; i < count; ++i) {
      for (size_t j = 0; j < seqs.size(); ++j) {
        const std::optional<std::string>& value = values[i * seqs.size() + j];
        if (!value.has_value()) continue;
        STRATA_ASSIGN_OR_RETURN(out[i], DecodeEntry(*value));
        break;
      }
    }
    return out;
  }
  std::vector<bool> found(count, false);
  absl::Status bad;
  STRATA_RETURN_IF_ERROR(
      catalog_->Scan(meta::ResolveTreePrefix(tree), meta::ResolvePrefix(tree, first_chunk),
                     [&](absl::string_view key, absl::string_view value) {
                       const uint64_t c = meta::ResolveKeyChunk(key);
                       if (c >= first_chunk + count) return false;
                       const uint64_t i = c - first_chunk;
                       // Entries of one chunk come newest first; only the snapshot's own line
                       // counts.
                       if (found[i] || !ancestry->contains(meta::ResolveKeySeq(key))) return true;
                       found[i] = true;
                       absl::StatusOr<ChunkEntry> entry = DecodeEntry(value);
                       if (!entry.ok()) {
                         bad = entry.status();
                         return false;
                       }
                       out[i] = *entry;
                       return true;
                     }));
  STRATA_RETURN_IF_ERROR(bad);
  return out;
}

}  // namespace strata::volume
