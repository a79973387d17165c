// SegmentChunkStore: chunk records appended to segment files; the index ("c/" keys) in the
// catalog, so refcount changes commit atomically with the manifests that cause them.

#include <algorithm>
#include <cstring>
#include <map>
#include <set>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "chunk/chunk_index.h"
#include "chunk/chunk_record.h"
#include "chunk/chunk_store.h"
#include "chunk/segment_format.h"
#include "util/coding.h"
#include "util/log.h"
#include "util/status_macros.h"

namespace strata::chunk {

std::string SegmentFileName(uint64_t segment_id) {
  return absl::StrFormat("seg-%016x.dat", segment_id);
}

bool ParseSegmentFileName(const std::string& name, uint64_t& segment_id) {
  if (name.size() != 4 + 16 + 4 || !name.starts_with("seg-") || !name.ends_with(".dat")) {
    return false;
  }
  uint64_t id = 0;
  for (char c : name.substr(4, 16)) {
    int digit = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
    if (digit < 0) return false;
    id = (id << 4) | static_cast<uint64_t>(digit);
  }
  segment_id = id;
  return true;
}

std::string ChunkLocation::Encode() const {
  std::string out;
  util::PutFixed64(out, segment_id);
  util::PutFixed64(out, offset_bytes);
  util::PutFixed32(out, stored_length);
  util::PutFixed32(out, raw_length);
  out.push_back(static_cast<char>(flags));
  util::PutFixed64(out, refcount);
  return out;
}

std::optional<ChunkLocation> ChunkLocation::Decode(absl::string_view bytes) {
  util::Decoder in(bytes);
  ChunkLocation loc;
  std::string flags;
  if (!in.GetFixed64(loc.segment_id) || !in.GetFixed64(loc.offset_bytes) ||
      !in.GetFixed32(loc.stored_length) || !in.GetFixed32(loc.raw_length) ||
      !in.GetBytes(1, flags) || !in.GetFixed64(loc.refcount) || !in.done()) {
    return std::nullopt;
  }
  loc.flags = static_cast<uint8_t>(flags[0]);
  return loc;
}

namespace {

// Bounds the variants tried for one fingerprint: more collisions than this mean a broken hash.
inline constexpr uint16_t kMaxVariants = 64;
// A segment whose live bytes are below this share of its size is compacted.
inline constexpr double kCompactLiveShare = 0.5;

class SegmentChunkStore final : public ChunkStore {
 public:
  SegmentChunkStore(Env* env, std::string dir, meta::Catalog* catalog, ChunkStoreOptions options)
      : env_(env), dir_(std::move(dir)), catalog_(catalog), options_(options) {}

  absl::Status Init() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    if (!options_.read_only) STRATA_RETURN_IF_ERROR(env_->CreateDirs(dir_));
    STRATA_ASSIGN_OR_RETURN(std::vector<std::string> names, env_->ListDir(dir_));
    uint64_t max_id = 0;
    for (const std::string& name : names) {
      uint64_t id = 0;
      if (!ParseSegmentFileName(name, id)) continue;
      segments_[id] =
          Segment{};  // Opened when first read (at most options_.max_open_segments at once).
      max_id = std::max(max_id, id);
    }
    // Appends always go to a fresh segment (made on the first append), never after a tail that
    // a crash may have torn.
    next_id_ = max_id + 1;
    return absl::OkStatus();
  }

  absl::StatusOr<ChunkKey> Put(uint32_t domain, std::span<const std::byte> data) override {
    const Fingerprint fp = FingerprintOf(domain, data);
    std::vector<std::byte> existing(data.size());
    absl::MutexLock lock(&mu_);
    for (uint16_t variant = 0; variant < kMaxVariants; ++variant) {
      const ChunkKey key{domain, fp, variant};
      STRATA_ASSIGN_OR_RETURN(std::optional<ChunkLocation> loc, LookupLocked(key));
      if (!loc.has_value()) {
        STRATA_ASSIGN_OR_RETURN(ChunkLocation appended, AppendLocked(key, data));
        staged_[key] = appended;
        ++pins_[key];
        return key;
      }
      // Same fingerprint: only identical bytes may share storage (a forced or real collision
      // must never let one volume read another's data).
      if (loc->raw_length == data.size()) {
        STRATA_ASSIGN_OR_RETURN(std::shared_ptr<File> file, SegmentLocked(loc->segment_id));
        STRATA_RETURN_IF_ERROR(ReadLocation(key, *loc, existing, file.get()));
        if (std::memcmp(existing.data(), data.data(), data.size()) == 0) {
          ++pins_[key];
          return key;
        }
      }
      STRATA_LOG(kWarning, "fingerprint collision on chunk ", key.ToString(),
                 ": storing as another variant");
    }
    return absl::InternalError(
        absl::StrCat("more than ", kMaxVariants, " colliding chunks for one fingerprint"));
  }

  absl::Status Read(const ChunkKey& key, std::span<std::byte> out) override {
    absl::ReaderMutexLock gc_lock(&gc_mu_);
    std::optional<ChunkLocation> loc;
    {
      absl::MutexLock lock(&mu_);
      if (auto it = staged_.find(key); it != staged_.end()) loc = it->second;
    }
    if (!loc.has_value()) {
      STRATA_ASSIGN_OR_RETURN(loc, LookupIndex(key));
    }
    if (!loc.has_value())
      return absl::NotFoundError(absl::StrCat("chunk ", key.ToString(), " not found"));
    if (loc->raw_length != out.size()) {
      return absl::DataLossError(absl::StrCat("chunk ", key.ToString(), ": stored length ",
                                              loc->raw_length, " does not match ", out.size()));
    }
    STRATA_ASSIGN_OR_RETURN(std::shared_ptr<File> file, SegmentFile(loc->segment_id));
    return ReadLocation(key, *loc, out, file.get());
  }

  absl::Status ReadMany(std::span<const ChunkKey> keys,
                        std::span<const std::span<std::byte>> outs) override {
    for (size_t i = 0; i < keys.size(); ++i) STRATA_RETURN_IF_ERROR(Read(keys[i], outs[i]));
    return absl::OkStatus();
  }

  absl::Status Commit(meta::WriteBatch batch, std::span<const ChunkKey> add_refs,
                      std::span<const ChunkKey> drop_refs) override {
    absl::MutexLock lock(&mu_);
    std::map<ChunkKey, int64_t> deltas;
    for (const ChunkKey& k : add_refs) ++deltas[k];
    for (const ChunkKey& k : drop_refs) --deltas[k];
    bool needs_sync = false;
    for (const auto& [key, delta] : deltas) {
      STRATA_ASSIGN_OR_RETURN(std::optional<ChunkLocation> loc, LookupLocked(key));
      if (!loc.has_value()) {
        return absl::InternalError(absl::StrCat("commit: chunk ", key.ToString(), " unknown"));
      }
      needs_sync |= staged_.contains(key);
      const int64_t refcount = static_cast<int64_t>(loc->refcount) + delta;
      STRATA_CHECK(refcount >= 0);
      loc->refcount = static_cast<uint64_t>(refcount);
      batch.Put(IndexKey(key), loc->Encode());
    }
    if (needs_sync) STRATA_RETURN_IF_ERROR(SyncSegmentsLocked());
    STRATA_RETURN_IF_ERROR(catalog_->Write(batch));
    // Committed chunks live in the index now: a staged copy would carry a stale refcount into
    // the next commit of the same chunk (two snapshots that stored the same new data).
    for (const auto& [key, delta] : deltas) staged_.erase(key);
    for (const ChunkKey& k : add_refs) UnpinLocked(k);
    return absl::OkStatus();
  }

  int PutConcurrency() const override { return 1; }
  bool reads_wait_on_network() const override { return false; }

  void Unpin(std::span<const ChunkKey> keys) override {
    absl::MutexLock lock(&mu_);
    for (const ChunkKey& k : keys) UnpinLocked(k);
  }

  absl::StatusOr<uint64_t> CollectGarbage() override {
    absl::MutexLock gc_lock(&gc_mu_);
    absl::MutexLock lock(&mu_);
    // Seal the active segment so its dead records can be reclaimed too.
    active_id_ = 0;
    // One pass over the index: drop unpinned zero-ref entries, gather live records per segment.
    std::vector<std::pair<ChunkKey, ChunkLocation>> entries;
    STRATA_RETURN_IF_ERROR(ScanIndex([&](const ChunkKey& key, const ChunkLocation& loc) {
      entries.push_back({key, loc});
    }));
    meta::WriteBatch drops;
    std::map<uint64_t, std::vector<std::pair<ChunkKey, ChunkLocation>>> live;
    for (const auto& [key, loc] : entries) {
      if (loc.refcount == 0 && !pins_.contains(key)) {
        drops.Delete(IndexKey(key));
      } else {
        live[loc.segment_id].push_back({key, loc});
      }
    }
    STRATA_RETURN_IF_ERROR(catalog_->Write(drops));
    absl::flat_hash_set<uint64_t> staged_segments;
    for (const auto& [key, loc] : staged_) staged_segments.insert(loc.segment_id);

    uint64_t reclaimed = 0;
    std::vector<uint64_t> ids;
    for (const auto& [id, segment] : segments_) ids.push_back(id);
    for (uint64_t id : ids) {
      if (id == active_id_ || staged_segments.contains(id)) continue;
      STRATA_ASSIGN_OR_RETURN(std::shared_ptr<File> file, SegmentLocked(id));  // Listed: known.
      STRATA_ASSIGN_OR_RETURN(uint64_t file_bytes, file->Size());
      uint64_t live_bytes = 0;
      for (const auto& [key, loc] : live[id]) live_bytes += kRecordHeaderBytes + loc.stored_length;
      if (file_bytes > 0 && static_cast<double>(live_bytes) >= kCompactLiveShare * file_bytes) {
        continue;
      }
      STRATA_RETURN_IF_ERROR(RelocateLocked(id, live[id]));
      reclaimed += file_bytes - live_bytes;
    }
    return reclaimed;
  }

  absl::StatusOr<ChunkStoreStats> GetStats() override {
    ChunkStoreStats stats;
    STRATA_RETURN_IF_ERROR(ScanIndex([&](const ChunkKey&, const ChunkLocation& loc) {
      if (loc.refcount == 0) return;
      ++stats.chunk_count;
      stats.referenced_chunk_count += loc.refcount;
      stats.stored_bytes += kRecordHeaderBytes + loc.stored_length;
    }));
    absl::MutexLock lock(&mu_);
    std::vector<uint64_t> ids;
    for (const auto& [id, segment] : segments_) ids.push_back(id);
    for (uint64_t id : ids) {
      STRATA_ASSIGN_OR_RETURN(std::shared_ptr<File> file, SegmentLocked(id));  // Listed: known.
      STRATA_ASSIGN_OR_RETURN(uint64_t size, file->Size());
      stats.segment_file_bytes += size;
      ++stats.segment_count;
    }
    return stats;
  }

  absl::Status ForEachChunk(const ChunkVisitor& visit) override { return ScanIndex(visit); }

  absl::StatusOr<Unindexed> CountUnindexed() override { return Unindexed{}; }

  absl::Status VerifyRecord(const ChunkKey& key, const ChunkLocation& location) override {
    std::vector<std::byte> out(location.raw_length);
    absl::ReaderMutexLock gc_lock(&gc_mu_);
    STRATA_ASSIGN_OR_RETURN(std::shared_ptr<File> file, SegmentFile(location.segment_id));
    return ReadLocation(key, location, out, file.get());
  }

  std::string SegmentPath(uint64_t segment_id) const override {
    return absl::StrCat(dir_, "/", SegmentFileName(segment_id));
  }

 private:
  absl::Status ScanIndex(const ChunkVisitor& visit) { return chunk::ScanIndex(*catalog_, visit); }

  absl::StatusOr<std::optional<ChunkLocation>> LookupIndex(const ChunkKey& key) {
    return LookupIndexEntry(*catalog_, key);
  }

  // Staged (appended, not yet committed) chunks first, then the index.
  absl::StatusOr<std::optional<ChunkLocation>> LookupLocked(const ChunkKey& key)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (auto it = staged_.find(key); it != staged_.end()) return it->second;
    return LookupIndex(key);
  }

  // The open file of segment `id` (opened now if it was closed, closing the least recently
  // used one past options_.max_open_segments); null when the store has no such segment. The
  // caller's reference keeps it open however long the read takes.
  absl::StatusOr<std::shared_ptr<File>> SegmentLocked(uint64_t id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = segments_.find(id);
    if (it == segments_.end()) return nullptr;
    it->second.last_use = ++use_clock_;
    if (it->second.file == nullptr) {
      STRATA_ASSIGN_OR_RETURN(std::unique_ptr<File> file, env_->OpenFile(SegmentPath(id), false));
      it->second.file = std::move(file);
      ++open_segments_;
      CloseLeastRecentlyUsedLocked();
    }
    return it->second.file;
  }
  absl::StatusOr<std::shared_ptr<File>> SegmentFile(uint64_t id) {
    absl::MutexLock lock(&mu_);
    return SegmentLocked(id);
  }
  // Keeps at most options_.max_open_segments files open (a store of 1 TB has 16,000 segments:
  // one descriptor each would pass the process's limit). The active segment and those not synced
  // yet stay open: closing them could lose a write-back error that a later fsync must report.
  void CloseLeastRecentlyUsedLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    while (open_segments_ > std::max<uint64_t>(1, options_.max_open_segments)) {
      Segment* oldest = nullptr;
      for (auto& [id, segment] : segments_) {
        if (segment.file == nullptr || id == active_id_ || unsynced_.contains(id)) continue;
        if (oldest == nullptr || segment.last_use < oldest->last_use) oldest = &segment;
      }
      if (oldest == nullptr) return;
      oldest->file.reset();
      --open_segments_;
    }
  }

  // REQUIRES: gc_mu_ held shared, or mu_ held, so that compaction cannot delete the segment.
  static absl::Status ReadLocation(const ChunkKey& key, const ChunkLocation& loc,
                                   std::span<std::byte> out, File* file) {
    if (file == nullptr) {
      return absl::DataLossError(
          absl::StrCat("chunk ", key.ToString(), ": segment ", loc.segment_id, " is missing"));
    }
    std::vector<std::byte> record(kRecordHeaderBytes + loc.stored_length);
    STRATA_RETURN_IF_ERROR(file->Read(loc.offset_bytes, record));
    return DecodeRecord(key, loc, record, out);
  }

  static absl::Status DecodeRecord(const ChunkKey& key, const ChunkLocation& loc,
                                   std::span<const std::byte> record, std::span<std::byte> out) {
    return chunk::DecodeRecord(key, record, out,
                               absl::StrCat("segment ", loc.segment_id, " at ", loc.offset_bytes));
  }

  absl::StatusOr<ChunkLocation> AppendLocked(const ChunkKey& key, std::span<const std::byte> data)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    std::vector<std::byte> record = MakeRecord(key, data, options_.compression);
    const RecordHeader header = ReadRecordHeader(record);
    return AppendRecordLocked(key, header.flags, header.raw_length, record);
  }

  // Fills in the header of `record` (payload already in place) and appends it.
  absl::StatusOr<ChunkLocation> AppendRecordLocked(const ChunkKey& key, uint8_t flags,
                                                   uint32_t raw_length, std::span<std::byte> record)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const uint32_t stored = static_cast<uint32_t>(record.size() - kRecordHeaderBytes);
    SealRecord(key, flags, raw_length, record);
    if (options_.read_only) return absl::FailedPreconditionError("chunk store is read-only");
    if (active_id_ == 0 || active_offset_ + record.size() > kSegmentTargetBytes) {
      STRATA_RETURN_IF_ERROR(StartSegmentLocked(next_id_++));
    }
    File* file = segments_[active_id_].file.get();  // Open: the active segment stays open.
    STRATA_RETURN_IF_ERROR(file->Write(active_offset_, record));
    ChunkLocation loc{active_id_, active_offset_, stored, raw_length, flags, 0};
    active_offset_ += record.size();
    unsynced_.insert(active_id_);
    return loc;
  }

  absl::Status StartSegmentLocked(uint64_t id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    STRATA_ASSIGN_OR_RETURN(std::unique_ptr<File> file, env_->OpenFile(SegmentPath(id), true));
    STRATA_RETURN_IF_ERROR(file->Truncate(0));
    STRATA_RETURN_IF_ERROR(env_->SyncDir(dir_));
    segments_[id] = Segment{.file = std::move(file), .last_use = ++use_clock_};
    ++open_segments_;
    active_id_ = id;
    active_offset_ = 0;
    CloseLeastRecentlyUsedLocked();
    return absl::OkStatus();
  }

  // After a failed fsync every later one fails too: Linux drops the pages it could not write,
  // so a later success would vouch for chunks that are not on disk. Commits fail until the
  // store reopens.
  absl::Status SyncSegmentsLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!sync_failure_.ok()) return sync_failure_;
    for (uint64_t id : unsynced_) {
      // Open: unsynced segments are never closed.
      if (absl::Status s = segments_[id].file->Sync(); !s.ok()) {
        sync_failure_ = absl::DataLossError(absl::StrCat(
            s.message(), "; chunks written since the last successful sync may be lost, and no ",
            "later sync can be trusted until the store reopens (restart stratad)"));
        return sync_failure_;
      }
    }
    unsynced_.clear();
    return absl::OkStatus();
  }

  void UnpinLocked(const ChunkKey& key) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = pins_.find(key);
    STRATA_CHECK(it != pins_.end());
    if (--it->second > 0) return;
    pins_.erase(it);
    // A staged chunk is now either in the index (committed) or abandoned: dead space.
    staged_.erase(key);
  }

  // Copies the live records of segment `id` to the active segment, repoints the index, then
  // deletes the old file. The copy is synced before the index changes, and the file is
  // deleted only after, so a crash at any point loses nothing.
  absl::Status RelocateLocked(uint64_t id,
                              const std::vector<std::pair<ChunkKey, ChunkLocation>>& live)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) ABSL_EXCLUSIVE_LOCKS_REQUIRED(gc_mu_) {
    meta::WriteBatch moves;
    STRATA_ASSIGN_OR_RETURN(std::shared_ptr<File> file, SegmentLocked(id));
    for (const auto& [key, loc] : live) {
      std::vector<std::byte> record(kRecordHeaderBytes + loc.stored_length);
      STRATA_RETURN_IF_ERROR(file->Read(loc.offset_bytes, record));
      // Verify before copying, so compaction never launders a corrupt record.
      std::vector<std::byte> plain(loc.raw_length);
      STRATA_RETURN_IF_ERROR(DecodeRecord(key, loc, record, plain));
      STRATA_ASSIGN_OR_RETURN(ChunkLocation moved,
                              AppendRecordLocked(key, loc.flags, loc.raw_length, record));
      moved.refcount = loc.refcount;
      moves.Put(IndexKey(key), moved.Encode());
    }
    STRATA_RETURN_IF_ERROR(SyncSegmentsLocked());
    STRATA_RETURN_IF_ERROR(catalog_->Write(moves));
    if (segments_[id].file != nullptr) --open_segments_;
    segments_.erase(id);
    STRATA_RETURN_IF_ERROR(env_->DeleteFile(SegmentPath(id)));
    return env_->SyncDir(dir_);
  }

  Env* const env_;
  const std::string dir_;
  meta::Catalog* const catalog_;
  const ChunkStoreOptions options_;

  // Lock order: gc_mu_ before mu_. mu_ serializes mutations (appends, commits) and is held
  // across their I/O; readers hold gc_mu_ shared so compaction cannot delete a segment under
  // them.
  absl::Mutex gc_mu_;
  absl::Mutex mu_ ABSL_ACQUIRED_AFTER(gc_mu_);
  struct Segment {
    std::shared_ptr<File> file;  // Null while closed.
    uint64_t last_use = 0;
  };
  std::map<uint64_t, Segment> segments_ ABSL_GUARDED_BY(mu_);  // Every segment of the store.
  uint64_t open_segments_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t use_clock_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t active_id_ ABSL_GUARDED_BY(mu_) = 0;  // 0: none yet; the next append starts one.
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t active_offset_ ABSL_GUARDED_BY(mu_) = 0;
  std::set<uint64_t> unsynced_ ABSL_GUARDED_BY(mu_);
  absl::Status sync_failure_ ABSL_GUARDED_BY(mu_);  // The first failed fsync.
  absl::flat_hash_map<ChunkKey, ChunkLocation> staged_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<ChunkKey, int64_t> pins_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

absl::StatusOr<std::unique_ptr<ChunkStore>> ChunkStore::OpenSegmentStore(
    Env* env, const std::string& dir, meta::Catalog* catalog, const ChunkStoreOptions& options) {
  auto store = std::make_unique<SegmentChunkStore>(env, dir, catalog, options);
  STRATA_RETURN_IF_ERROR(store->Init());
  return store;
}

}  // namespace strata::chunk
