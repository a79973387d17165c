// RegionImpl: background work on snapshots: ingest (pending -> completed or error) and pruning of
// deleted snapshots.
#include <algorithm>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "region/region_impl.h"
#include "region/snapshot_records.h"
#include "util/log.h"
#include "util/run_on_threads.h"
#include "util/status_macros.h"
#include "volume/snapshot_tree.h"

namespace strata::region {

using volume::ChunkEntry;
using volume::DecodeEntry;
using volume::EncodeEntry;

namespace {

// The volume id EBS shows for snapshots made with the EBS direct APIs.
inline constexpr char kDirectSnapshotVolumeId[] = "vol-ffffffff";

}  // namespace

void RegionImpl::RunIngest(const std::shared_ptr<PendingSnapshot>& pending) {
  VolumeImpl* volume = nullptr;
  {
    absl::MutexLock lock(&mu_);
    absl::StatusOr<VolumeImpl*> found = FindVolumeLocked(pending->record.volume_id);
    if (!found.ok() || !pending_.contains(pending->record.id)) return;  // Failed meanwhile.
    volume = *found;
  }
  // The volume cannot be deleted while it has a pending snapshot, so `volume` stays valid.
  pending->frozen_count.store(pending->frozen->Count());
  // The frozen chunks in order, taken by PutConcurrency() threads at once (IngestChunk locks
  // its chunk's stripe; a writer may have ingested a chunk already, which it then skips).
  absl::Mutex cursor_mu;
  std::optional<uint64_t> cursor = pending->frozen->NextSet(0);
  auto ingest = [&] {
    for (;;) {
      uint64_t c = 0;
      {
        absl::MutexLock lock(&cursor_mu);
        if (!cursor.has_value()) return;
        c = *cursor;
        cursor = pending->frozen->NextSet(c + 1);
      }
      volume->IngestChunk(*pending, c);
      absl::MutexLock lock(&pending->mu);
      if (!pending->error.ok()) return;
    }
  };
  util::RunOnThreads(chunks_->PutConcurrency(), ingest);
  absl::StatusOr<util::SharedHold> shared = EnterShared();
  absl::MutexLock lock(&mu_);
  absl::Status error = shared.status();
  if (error.ok()) {
    absl::MutexLock plock(&pending->mu);
    error = pending->error;
  }
  if (error.ok()) error = CompleteSnapshot(*volume, *pending);
  if (!error.ok()) FailSnapshot(*volume, pending, error);
  if (pending->direct) {
    // The builder volume served only this snapshot.
    if (absl::Status s = DeleteVolumeLocked(pending->record.volume_id); !s.ok()) {
      STRATA_LOG(kWarning, "snapshot ", pending->record.id,
                 ": builder not deleted: ", s.ToString());
    }
  }
  if (!error.ok()) return;
  // A deleted parent waited for this child to complete before it could be merged.
  if (std::optional<meta::SnapshotRecord> parent = tree_->Get(pending->record.parent_id);
      parent.has_value() && parent->deleted) {
    tasks_.Push({Task::Kind::kPrune, parent->id, nullptr, 0});
  }
}

absl::Status RegionImpl::CompleteSnapshot(VolumeImpl& volume, PendingSnapshot& pending) {
  absl::MutexLock plock(&pending.mu);
  meta::SnapshotRecord r = *tree_->Get(pending.record.id);  // Current tags.
  // The manifest commits in pieces of StoreOptions::manifest_piece_entries, each with its
  // refcounts; the last piece carries the completed record, which alone makes the snapshot visible.
  // A failure (or a crash) part way leaves entries of a snapshot that ends in error: DropManifest
  // removes them. One piece per operation keeps a RADOS catalog write within the OSD's size limit.
  const size_t piece = std::max<size_t>(1, options_.manifest_piece_entries);
  uint64_t data_chunks = 0;
  absl::flat_hash_map<chunk::ChunkKey, int> committed;
  auto it = pending.entries.begin();
  absl::Status status;
  while (status.ok()) {
    meta::WriteBatch batch;
    std::vector<chunk::ChunkKey> pins;
    for (size_t n = 0; n < piece && it != pending.entries.end(); ++n, ++it) {
      const auto& [c, entry] = *it;
      const std::string value = EncodeEntry(entry);
      batch.Put(meta::ManifestKey(r.seq, c), value);
      batch.Put(meta::ResolveKey(r.tree, c, r.seq), value);
      if (entry.has_value()) pins.push_back(*entry);
      data_chunks += entry.has_value() ? 1 : 0;
    }
    const bool last = it == pending.entries.end();
    if (last) {
      r.state = meta::SnapshotRecordState::kCompleted;
      if (pending.direct) r.volume_id = kDirectSnapshotVolumeId;  // As EBS shows it.
      r.changed_chunk_count = pending.entries.size();
      r.incremental_bytes = data_chunks * chunk_size_bytes_;
      batch.Put(meta::SnapshotKey(r.id), r.Encode());
    }
    status = chunks_->Commit(std::move(batch), pins, {});
    if (status.ok()) {
      for (const chunk::ChunkKey& k : pins) ++committed[k];
    }
    if (last) break;
  }
  // Committed pieces' pins were released by their commits; the rest stay for FailSnapshot.
  std::erase_if(pending.pinned, [&](const chunk::ChunkKey& k) {
    auto found = committed.find(k);
    if (found == committed.end() || found->second == 0) return false;
    --found->second;
    return true;
  });
  STRATA_RETURN_IF_ERROR(status);
  tree_->Put(r);
  pending_.erase(r.id);
  volume.FinishPending(&pending);
  return absl::OkStatus();
}

absl::Status RegionImpl::DropManifest(const meta::SnapshotRecord& r) {
  const size_t piece = std::max<size_t>(1, options_.manifest_piece_entries);
  for (bool more = true; more;) {
    meta::WriteBatch batch;
    std::vector<chunk::ChunkKey> drops;
    absl::Status bad;
    size_t n = 0;
    STRATA_RETURN_IF_ERROR(catalog_->Scan(
        meta::ManifestPrefix(r.seq), "", [&](absl::string_view key, absl::string_view value) {
          absl::StatusOr<ChunkEntry> entry = DecodeEntry(value);
          if (!entry.ok()) {
            bad = entry.status();
            return false;
          }
          if (entry->has_value()) drops.push_back(**entry);
          batch.Delete(std::string(key));
          batch.Delete(meta::ResolveKey(r.tree, meta::ManifestKeyChunk(key), r.seq));
          return ++n < piece;
        }));
    STRATA_RETURN_IF_ERROR(bad);
    more = n == piece;
    if (n > 0) STRATA_RETURN_IF_ERROR(chunks_->Commit(std::move(batch), {}, drops));
  }
  return absl::OkStatus();
}

void RegionImpl::FailSnapshot(VolumeImpl& volume, const std::shared_ptr<PendingSnapshot>& pending,
                              const absl::Status& why) {
  STRATA_LOG(kError, "snapshot ", pending->record.id, " failed: ", why.ToString());
  meta::WriteBatch batch;
  std::vector<meta::SnapshotRecord> failed_records;
  for (const std::shared_ptr<PendingSnapshot>& failed : volume.FailPending(pending)) {
    absl::MutexLock plock(&failed->mu);
    chunks_->Unpin(failed->pinned);
    failed->pinned.clear();
    std::optional<meta::SnapshotRecord> r = tree_->Get(failed->record.id);
    if (!r.has_value()) continue;
    r->state = meta::SnapshotRecordState::kError;
    r->state_message = failed == pending
                           ? std::string(why.message())
                           : absl::StrCat("its parent ", pending->record.id, " failed");
    batch.Put(meta::SnapshotKey(r->id), r->Encode());
    failed_records.push_back(*r);
    pending_.erase(r->id);
  }
  batch.Put(meta::VolumeKey(volume.id()), volume.record().Encode());
  if (absl::Status s = catalog_->Write(batch); !s.ok()) {
    // The records stay pending in the catalog; the next open turns them into errors. Until then
    // they show as failed here, with the first reason.
    STRATA_LOG(kError, "snapshot ", pending->record.id, ": recording the failure: ", s.ToString());
    for (const meta::SnapshotRecord& r : failed_records) tree_->Put(r);
    return;
  }
  for (const meta::SnapshotRecord& r : failed_records) {
    tree_->Put(r);
    // Pieces of its manifest that committed before the failure (the next open retries).
    if (absl::Status s = DropManifest(r); !s.ok()) {
      STRATA_LOG(kError, "snapshot ", r.id, ": dropping its partial manifest: ", s.ToString());
    }
  }
}

absl::Status RegionImpl::Prune(const std::string& snapshot_id) {
  // Bounded by the depth of the tree: each round moves to a parent.
  for (std::string id = snapshot_id; !id.empty();) {
    std::optional<meta::SnapshotRecord> r = tree_->Get(id);
    if (!r.has_value() || !r->deleted) return absl::OkStatus();
    for (const auto& [vid, volume] : volumes_) {
      if (volume->record().last_snapshot_id != id) continue;
      STRATA_ASSIGN_OR_RETURN(const bool rebased, RebaseVolume(*volume, *r));
      if (!rebased) return absl::OkStatus();  // The volume still reads through it.
    }
    // Another node's volume (RADOS): kept until that node moves its volume off it (its next
    // snapshot or the volume's deletion queues this prune there).
    STRATA_ASSIGN_OR_RETURN(const bool used_elsewhere, OtherNodeVolumeUses(id));
    if (used_elsewhere) return absl::OkStatus();
    std::vector<meta::SnapshotRecord> children = tree_->Children(id);
    for (const meta::SnapshotRecord& child : children) {
      if (child.state != meta::SnapshotRecordState::kCompleted) {
        return absl::OkStatus();  // Resumed when the child completes.
      }
    }
    if (children.size() >= 2) return absl::OkStatus();  // Shared by two branches.
    if (children.size() == 1) return MergeIntoChild(*r, children[0]);
    STRATA_RETURN_IF_ERROR(RemoveSnapshotData(*r));
    id = r->parent_id;  // The parent lost a child: it may now go too.
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> RegionImpl::RebaseVolume(VolumeImpl& volume, const meta::SnapshotRecord& r) {
  if (volume.HasPending()) return false;
  std::vector<uint64_t> chunks;
  STRATA_RETURN_IF_ERROR(catalog_->Scan(meta::ManifestPrefix(r.seq), "",
                                        [&](absl::string_view key, absl::string_view) {
                                          chunks.push_back(meta::ManifestKeyChunk(key));
                                          return true;
                                        }));
  if (!volume.Rebase(r.parent_id, chunks)) return false;
  // A crash before this write leaves the old last snapshot in the record: still correct, as
  // the snapshot is then kept.
  STRATA_RETURN_IF_ERROR(PersistVolume(volume));
  return true;
}

absl::Status RegionImpl::RemoveSnapshotData(const meta::SnapshotRecord& r) {
  // The manifest in pieces first (a crash between them leaves the deleted record, and the next
  // open prunes it again), then the record.
  STRATA_RETURN_IF_ERROR(DropManifest(r));
  meta::WriteBatch batch;
  batch.Delete(meta::SnapshotKey(r.id));
  STRATA_RETURN_IF_ERROR(catalog_->Write(batch));
  tree_->Erase(r.id);
  return absl::OkStatus();
}

absl::Status RegionImpl::MergeIntoChild(const meta::SnapshotRecord& r, meta::SnapshotRecord child) {
  // The child inherits every entry it does not override; overridden ones are dropped. Cost:
  // O(this snapshot's manifest entries), in pieces of StoreOptions::manifest_piece_entries (one
  // RADOS operation each stays within the OSD's size limit). Each piece moves or drops its
  // entries and rewrites the child's counts in one atomic write; the last also gives the child
  // this snapshot's parent and removes this snapshot's record. Halfway (a crash between pieces),
  // every chunk still resolves as before: a moved entry is found in the child with the value it
  // had here, the rest here; the next open prunes this deleted snapshot again and moves the rest.
  std::vector<std::pair<uint64_t, std::string>> entries;
  STRATA_RETURN_IF_ERROR(catalog_->Scan(
      meta::ManifestPrefix(r.seq), "", [&](absl::string_view key, absl::string_view value) {
        entries.emplace_back(meta::ManifestKeyChunk(key), std::string(value));
        return true;
      }));
  const size_t piece = std::max<size_t>(1, options_.manifest_piece_entries);
  size_t at = 0;
  do {
    const size_t end = std::min(entries.size(), at + piece);
    std::vector<std::string> child_keys;
    for (size_t i = at; i < end; ++i)
      child_keys.push_back(meta::ManifestKey(child.seq, entries[i].first));
    STRATA_ASSIGN_OR_RETURN(std::vector<std::optional<std::string>> overridden,
                            catalog_->GetMany(child_keys));
    meta::WriteBatch batch;
    std::vector<chunk::ChunkKey> drops;
    meta::SnapshotRecord next = child;
    for (size_t i = at; i < end; ++i) {
      const auto& [c, value] = entries[i];
      STRATA_ASSIGN_OR_RETURN(ChunkEntry entry, DecodeEntry(value));
      batch.Delete(meta::ManifestKey(r.seq, c));
      batch.Delete(meta::ResolveKey(r.tree, c, r.seq));
      if (overridden[i - at].has_value()) {
        if (entry.has_value()) drops.push_back(*entry);
        continue;
      }
      batch.Put(meta::ManifestKey(next.seq, c), value);
      batch.Put(meta::ResolveKey(next.tree, c, next.seq), value);
      ++next.changed_chunk_count;
      if (entry.has_value()) next.incremental_bytes += chunk_size_bytes_;
    }
    const bool last = end == entries.size();
    if (last) {
      next.parent_id = r.parent_id;
      batch.Delete(meta::SnapshotKey(r.id));
    }
    batch.Put(meta::SnapshotKey(next.id), next.Encode());
    STRATA_RETURN_IF_ERROR(chunks_->Commit(std::move(batch), {}, drops));
    child = std::move(next);
    tree_->Put(child);
    at = end;
  } while (at < entries.size());
  tree_->Erase(r.id);
  return absl::OkStatus();
}

}  // namespace strata::region
