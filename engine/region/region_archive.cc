// RegionImpl: the archive tier (docs/data-protection.md, docs/formats/archive.md).
//
// Archival writes the snapshot's chunks, as the main store keeps them, to the archive store in
// parts, then a manifest that names them; then one catalog write marks the archival complete
// ("a/<id>": archived) and deletes the snapshot, so that the usual prune frees the chunks no
// other snapshot needs (merged into its child, or kept while a volume or two branches need
// them). A restore undeletes the snapshot when its data was kept; otherwise it puts the chunks
// back and commits a full manifest under a fresh sequence number and tree, recorded in "a/<id>"
// first, so that a crash part way is cleaned up and the restore runs again at the next open.
// Both follow StoreOptions::archive's timing model: the work runs when the model says the
// operation ends.
#include <algorithm>
#include <atomic>
#include <optional>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "region/archive_format.h"
#include "region/region_impl.h"
#include "region/snapshot_records.h"
#include "strata/aws_error.h"
#include "util/log.h"
#include "util/run_on_threads.h"
#include "util/status_macros.h"

namespace strata::region {
namespace {

using volume::ChunkEntry;
using volume::DecodeEntry;
using volume::EncodeEntry;

absl::Status IncorrectState(const std::string& message) {
  return WithAwsErrorCode(absl::FailedPreconditionError(message), "IncorrectState");
}

}  // namespace

void RegionImpl::set_copy_source_check(std::function<bool(const std::string&)> check) {
  absl::MutexLock lock(&mu_);
  copy_source_check_ = std::move(check);
}

absl::StatusOr<archive::ArchiveStore*> RegionImpl::Archive() {
  absl::MutexLock lock(&archive_mu_);
  if (archive_ != nullptr) return archive_.get();
  const StoreOptions::ArchiveTier& o = options_.archive;
  if (!o.s3_endpoint.empty()) {
    STRATA_ASSIGN_OR_RETURN(
        archive_, archive::OpenS3Archive({.endpoint = o.s3_endpoint,
                                          .bucket = o.s3_bucket,
                                          .region = o.s3_region,
                                          .access_key_id = o.s3_access_key_id,
                                          .secret_access_key = o.s3_secret_access_key,
                                          .prefix = absl::StrCat(o.s3_prefix, name_, "/")}));
  } else {
    archive_ = archive::NewDirectoryArchive(env_, ArchiveDir());
  }
  return archive_.get();
}

std::string RegionImpl::ArchiveDir() const {
  return options_.archive.dir.empty() ? dir_ + "/archive"
                                      : absl::StrCat(options_.archive.dir, "/", name_);
}

uint64_t RegionImpl::TierMicros(uint64_t bytes) const {
  const uint64_t rate = std::max<uint64_t>(1, options_.archive.bytes_per_second);
  return options_.archive.fixed_ms * 1000 +
         static_cast<uint64_t>(static_cast<double>(bytes) * 1e6 / static_cast<double>(rate));
}

absl::StatusOr<std::optional<ArchiveRecord>> RegionImpl::GetArchiveRecord(
    const std::string& snapshot_id) {
  STRATA_ASSIGN_OR_RETURN(std::optional<std::string> value,
                          catalog_->Get(meta::ArchiveKey(snapshot_id)));
  if (!value.has_value()) return std::nullopt;
  STRATA_ASSIGN_OR_RETURN(ArchiveRecord a, ArchiveRecord::Decode(*value));
  return a;
}

absl::StatusOr<std::map<std::string, ArchiveRecord>> RegionImpl::ArchiveRecords() {
  std::map<std::string, ArchiveRecord> out;
  absl::Status bad;
  STRATA_RETURN_IF_ERROR(
      catalog_->Scan(meta::kArchivePrefix, "", [&](absl::string_view key, absl::string_view value) {
        absl::StatusOr<ArchiveRecord> a = ArchiveRecord::Decode(value);
        if (!a.ok()) {
          bad = a.status();
          return false;
        }
        out.emplace(std::string(key.substr(meta::kArchivePrefix.size())), *std::move(a));
        return true;
      }));
  STRATA_RETURN_IF_ERROR(bad);
  return out;
}

SnapshotTierStatus RegionImpl::ToTierStatus(const meta::SnapshotRecord& r,
                                            const ArchiveRecord* a) const {
  SnapshotTierStatus s;
  s.snapshot_id = r.id;
  s.volume_id = r.volume_id;
  s.owner = r.owner;
  s.tags = r.tags;
  s.snapshot_state = SnapshotStateName(ToState(r.state));
  s.storage_tier = "standard";
  if (a == nullptr) return s;
  const uint64_t now = env_->NowMicros();
  if (a->state == TierState::kArchived || a->state == TierState::kRestoring) {
    s.storage_tier = "archive";
  }
  s.last_operation = a->operation;
  s.last_operation_status = absl::StrCat(a->operation, "-", a->status);
  s.last_operation_detail = a->detail;
  s.tiering_start_micros = a->start_micros;
  s.archival_complete_micros = a->archived_micros;
  s.restore_expiry_micros = a->state == TierState::kRestored ? a->restore_expiry_micros : 0;
  if (a->status == "completed") {
    s.progress_percent = 100;
  } else if (a->status == "in-progress") {
    const uint64_t span = std::max<uint64_t>(1, a->due_micros - a->start_micros);
    s.progress_percent = static_cast<int>(
        std::min<uint64_t>(99, (std::max(now, a->start_micros) - a->start_micros) * 100 / span));
  }
  return s;
}

void RegionImpl::AnnotateTier(SnapshotInfo& info, const ArchiveRecord& a) {
  if (a.state == TierState::kArchived || a.state == TierState::kRestoring) {
    info.storage_tier = "archive";
  } else if (a.state == TierState::kRestored) {
    info.restore_expiry_micros = a.restore_expiry_micros;
  }
}

absl::Status RegionImpl::CheckArchivable(const meta::SnapshotRecord& r) {
  if (r.state != meta::SnapshotRecordState::kCompleted) {
    return IncorrectState(absl::StrCat("the snapshot ", r.id, " is not completed"));
  }
  std::string image_id;
  STRATA_RETURN_IF_ERROR(
      catalog_->Scan(meta::ImageRefPrefix(r.id), "", [&](absl::string_view key, auto) {
        image_id = std::string(key.substr(meta::ImageRefPrefix(r.id).size()));
        return false;
      }));
  if (!image_id.empty()) {
    return IncorrectState(absl::StrCat("the snapshot ", r.id, " is registered in ", image_id,
                                       ": deregister the image to archive it"));
  }
  // A copy into another data key reads it through a hidden builder volume.
  for (const auto& [id, volume] : volumes_) {
    if (volume->record().base_snapshot_id == r.id && volume->HasPending()) {
      return IncorrectState(
          absl::StrCat("the snapshot ", r.id, " is in use by a pending copy (", id, ")"));
    }
  }
  {
    absl::MutexLock lock(&readers_mu_);
    if (open_readers_.contains(r.id)) {
      return IncorrectState(
          absl::StrCat("the snapshot ", r.id, " is being read (by a pending copy or an export)"));
    }
  }
  if (copy_source_check_ && copy_source_check_(r.id)) {
    return IncorrectState(
        absl::StrCat("the snapshot ", r.id, " is in use by a pending cross-region copy"));
  }
  return absl::OkStatus();
}

absl::StatusOr<SnapshotTierStatus> RegionImpl::ArchiveSnapshot(const std::string& snapshot_id) {
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, EnterShared());
  absl::MutexLock lock(&mu_);
  STRATA_ASSIGN_OR_RETURN(std::optional<ArchiveRecord> existing, GetArchiveRecord(snapshot_id));
  if (existing.has_value() && existing->state != TierState::kStandard) {
    return IncorrectState(absl::StrCat(
        "the snapshot ", snapshot_id,
        existing->state == TierState::kArchiving ? " is being archived already"
        : existing->state == TierState::kRestored
            ? " is temporarily restored: it returns to the archive when its restore period ends"
            : " is archived already"));
  }
  STRATA_ASSIGN_OR_RETURN(meta::SnapshotRecord r, FindSnapshot(*tree_, snapshot_id));
  STRATA_RETURN_IF_ERROR(CheckArchivable(r));
  const uint64_t now = env_->NowMicros();
  ArchiveRecord a;
  a.snapshot = r;
  a.state = TierState::kArchiving;
  a.operation = "archival";
  a.status = "in-progress";
  a.start_micros = now;
  a.due_micros = now + TierMicros(r.volume_size_bytes);
  meta::WriteBatch batch;
  batch.Put(meta::ArchiveKey(r.id), a.Encode());
  STRATA_RETURN_IF_ERROR(catalog_->Write(batch));
  tasks_.Push({.kind = Task::Kind::kTier, .id = r.id, .not_before_micros = a.due_micros});
  return ToTierStatus(r, &a);
}

absl::StatusOr<SnapshotTierStatus> RegionImpl::RestoreArchivedSnapshot(
    const std::string& snapshot_id, const SnapshotTierRestoreRequest& request) {
  if ((request.temporary_days != 0) == request.permanent) {
    return WithAwsErrorCode(
        absl::InvalidArgumentError("give exactly one of TemporaryRestoreDays and PermanentRestore"),
        "InvalidParameterCombination");
  }
  if (request.temporary_days > 180) {
    return WithAwsErrorCode(
        absl::InvalidArgumentError(
            absl::StrCat("TemporaryRestoreDays must be 1 to 180, not ", request.temporary_days)),
        "InvalidParameterValue");
  }
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, EnterShared());
  absl::MutexLock lock(&mu_);
  STRATA_ASSIGN_OR_RETURN(std::optional<ArchiveRecord> a, GetArchiveRecord(snapshot_id));
  if (!a.has_value() || a->state == TierState::kStandard || a->state == TierState::kArchiving) {
    STRATA_RETURN_IF_ERROR(FindSnapshot(*tree_, snapshot_id).status());
    return IncorrectState(absl::StrCat("the snapshot ", snapshot_id, " is not archived"));
  }
  if (a->state == TierState::kRestoring) {
    return IncorrectState(absl::StrCat("the snapshot ", snapshot_id, " is being restored"));
  }
  const uint64_t now = env_->NowMicros();
  a->restore_days = request.temporary_days;
  a->operation = request.permanent ? "permanent-restore" : "temporary-restore";
  a->start_micros = now;
  a->detail.clear();
  std::optional<meta::SnapshotRecord> current = tree_->Get(snapshot_id);
  if (a->state == TierState::kRestored) {
    // Already back: a new period, or for good.
    a->status = "completed";
    a->due_micros = now;
    a->state = request.permanent ? TierState::kStandard : TierState::kRestored;
    a->restore_expiry_micros = request.permanent ? 0 : now + request.temporary_days * day_micros();
    meta::WriteBatch batch;
    batch.Put(meta::ArchiveKey(snapshot_id), a->Encode());
    STRATA_RETURN_IF_ERROR(catalog_->Write(batch));
    if (request.permanent) {
      QueueArchiveDeletion(snapshot_id);
    } else {
      tasks_.Push({.kind = Task::Kind::kTier,
                   .id = snapshot_id,
                   .not_before_micros = a->restore_expiry_micros});
    }
    return ToTierStatus(current.has_value() ? *current : a->snapshot, &*a);
  }
  a->state = TierState::kRestoring;
  a->status = "in-progress";
  a->due_micros = now + TierMicros(a->snapshot.volume_size_bytes);
  meta::WriteBatch batch;
  batch.Put(meta::ArchiveKey(snapshot_id), a->Encode());
  STRATA_RETURN_IF_ERROR(catalog_->Write(batch));
  tasks_.Push({.kind = Task::Kind::kTier, .id = snapshot_id, .not_before_micros = a->due_micros});
  return ToTierStatus(a->snapshot, &*a);
}

absl::StatusOr<std::vector<RegionImpl::ListedSnapshot>> RegionImpl::ListedSnapshots() {
  std::vector<meta::SnapshotRecord> all = tree_->All();
  std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return a.seq < b.seq; });
  using ById = std::map<std::string, ArchiveRecord>;
  STRATA_ASSIGN_OR_RETURN(ById archived, ArchiveRecords());
  std::vector<ListedSnapshot> out;
  for (meta::SnapshotRecord& r : all) {
    if (r.deleted || r.recycled_micros != 0) continue;
    std::optional<ArchiveRecord> a;
    if (auto it = archived.find(r.id); it != archived.end()) {
      a = std::move(it->second);
      archived.erase(it);
    }
    out.push_back({std::move(r), std::move(a)});
  }
  for (auto& [id, a] : archived) {  // Archived: as they were.
    if (a.state == TierState::kArchived || a.state == TierState::kRestoring) {
      out.push_back({a.snapshot, std::move(a)});
    }
  }
  return out;
}

absl::StatusOr<std::vector<SnapshotTierStatus>> RegionImpl::ListSnapshotTierStatuses() {
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, EnterShared());
  absl::MutexLock lock(&mu_);
  STRATA_ASSIGN_OR_RETURN(std::vector<ListedSnapshot> listed, ListedSnapshots());
  std::vector<SnapshotTierStatus> out;
  for (const ListedSnapshot& l : listed) {
    out.push_back(ToTierStatus(l.record, l.archive.has_value() ? &*l.archive : nullptr));
  }
  return out;
}

absl::StatusOr<std::optional<SnapshotInfo>> RegionImpl::DescribeArchivedLocked(
    const std::string& snapshot_id) {
  STRATA_ASSIGN_OR_RETURN(std::optional<ArchiveRecord> a, GetArchiveRecord(snapshot_id));
  if (!a.has_value() || (a->state != TierState::kArchived && a->state != TierState::kRestoring)) {
    return std::nullopt;
  }
  SnapshotInfo info = ToInfo(a->snapshot);
  AnnotateTier(info, *a);
  return info;
}

absl::StatusOr<meta::SnapshotRecord> RegionImpl::FindUsableSnapshotLocked(
    const std::string& snapshot_id) {
  absl::StatusOr<meta::SnapshotRecord> r = FindCompletedSnapshot(*tree_, snapshot_id);
  if (!absl::IsNotFound(r.status())) return r;
  STRATA_ASSIGN_OR_RETURN(std::optional<SnapshotInfo> archived,
                          DescribeArchivedLocked(snapshot_id));
  if (!archived.has_value()) return r;
  return IncorrectState(absl::StrCat("the snapshot ", snapshot_id,
                                     " is archived: restore it first (RestoreSnapshotTier)"));
}

absl::StatusOr<bool> RegionImpl::DeleteArchivedLocked(const std::string& snapshot_id) {
  STRATA_ASSIGN_OR_RETURN(std::optional<ArchiveRecord> a, GetArchiveRecord(snapshot_id));
  if (!a.has_value()) return false;
  switch (a->state) {
    case TierState::kArchiving:
      return IncorrectState(absl::StrCat("the snapshot ", snapshot_id, " is being archived"));
    case TierState::kRestoring:
      return IncorrectState(absl::StrCat("the snapshot ", snapshot_id, " is being restored"));
    case TierState::kArchived: {
      STRATA_RETURN_IF_ERROR(CheckNotLocked(a->snapshot));
      meta::WriteBatch batch;
      batch.Delete(meta::ArchiveKey(snapshot_id));
      STRATA_RETURN_IF_ERROR(catalog_->Write(batch));
      QueueArchiveDeletion(snapshot_id);
      return true;  // Its data in the main store, if kept, was deleted at the archival.
    }
    case TierState::kRestored:
    case TierState::kStandard: {
      // The snapshot itself is deleted as any other; its archive goes with it (a temporarily
      // restored snapshot goes straight out, not to the Recycle Bin).
      std::optional<meta::SnapshotRecord> r = tree_->Get(snapshot_id);
      if (r.has_value()) STRATA_RETURN_IF_ERROR(CheckNotLocked(*r));
      meta::WriteBatch batch;
      batch.Delete(meta::ArchiveKey(snapshot_id));
      STRATA_RETURN_IF_ERROR(catalog_->Write(batch));
      QueueArchiveDeletion(snapshot_id);
      return false;
    }
  }
  return false;
}

void RegionImpl::QueueArchiveDeletion(const std::string& snapshot_id) {
  tasks_.Push({.kind = Task::Kind::kTier, .id = snapshot_id});
}

void RegionImpl::DeleteArchiveObjects(const std::string& snapshot_id) {
  absl::Status status = [&]() -> absl::Status {
    STRATA_ASSIGN_OR_RETURN(archive::ArchiveStore * store, Archive());
    STRATA_ASSIGN_OR_RETURN(std::vector<std::string> names, store->List(snapshot_id + "."));
    // The manifest first: without it, what is left is an unfinished archive.
    std::sort(names.begin(), names.end(), [&](const std::string& a, const std::string& b) {
      return (a == ArchiveManifestName(snapshot_id)) > (b == ArchiveManifestName(snapshot_id));
    });
    for (const std::string& name : names) STRATA_RETURN_IF_ERROR(store->Delete(name));
    return absl::OkStatus();
  }();
  if (!status.ok()) {
    STRATA_LOG(
        kWarning, "snapshot ", snapshot_id,
        ": its archive objects were not all deleted (the next open retries): ", status.ToString());
  }
}

void RegionImpl::ResumeTiering() {
  absl::StatusOr<std::map<std::string, ArchiveRecord>> all = ArchiveRecords();
  if (!all.ok()) {
    STRATA_LOG(kError, "region ", name_, ": archive tier records: ", all.status().ToString());
    return;
  }
  for (const auto& [id, a] : *all) {
    if (a.state == TierState::kArchiving || a.state == TierState::kRestoring) {
      tasks_.Push({.kind = Task::Kind::kTier, .id = id, .not_before_micros = a.due_micros});
    } else if (a.state == TierState::kRestored) {
      tasks_.Push(
          {.kind = Task::Kind::kTier, .id = id, .not_before_micros = a.restore_expiry_micros});
    }
  }
  // Objects no record needs: a deletion or a permanent restore that stopped part way.
  if (options_.archive.s3_endpoint.empty() && !env_->FileExists(ArchiveDir())) {
    return;  // Never archived here (and no S3 to open for nothing).
  }
  absl::StatusOr<archive::ArchiveStore*> store = Archive();
  absl::StatusOr<std::vector<std::string>> names =
      store.ok() ? (*store)->List("") : absl::StatusOr<std::vector<std::string>>(store.status());
  if (!names.ok()) {
    STRATA_LOG(kWarning, "region ", name_, ": archive not listed: ", names.status().ToString());
    return;
  }
  std::set<std::string> orphans;
  for (const std::string& name : *names) {
    const std::string id = name.substr(0, name.find('.'));
    auto it = all->find(id);
    if (it == all->end() || it->second.state == TierState::kStandard) orphans.insert(id);
  }
  for (const std::string& id : orphans) DeleteArchiveObjects(id);
}

std::optional<Task> RegionImpl::RunTierTask(const Task& task) {
  const uint64_t now = env_->NowMicros();
  std::optional<ArchiveRecord> a;
  {
    absl::StatusOr<util::SharedHold> shared = EnterShared();
    absl::MutexLock lock(&mu_);
    absl::StatusOr<std::optional<ArchiveRecord>> got =
        shared.ok() ? GetArchiveRecord(task.id) : shared.status();
    if (!got.ok()) {
      STRATA_LOG(kError, "snapshot ", task.id,
                 ": tiering not run, retried at next open: ", got.status().ToString());
      return std::nullopt;
    }
    a = *std::move(got);
  }
  if (!a.has_value() || a->state == TierState::kStandard) {
    // Deleted, or restored for good (or its archival failed): its objects go, if any are left.
    DeleteArchiveObjects(task.id);
    return std::nullopt;
  }
  uint64_t due = 0;
  switch (a->state) {
    case TierState::kArchiving:
    case TierState::kRestoring:
      due = a->due_micros;
      break;
    case TierState::kRestored:
      due = a->restore_expiry_micros;
      break;
    case TierState::kArchived:
    case TierState::kStandard:
      return std::nullopt;  // Done (a task queued twice).
  }
  if (now < due) {
    // Not yet: back at its time (a retry, so that RunAll leaves it queued).
    return Task{.kind = Task::Kind::kTier, .id = task.id, .not_before_micros = due, .retry = true};
  }
  absl::Status status;
  switch (a->state) {
    case TierState::kArchiving:
      status = ArchiveNow(task.id);
      break;
    case TierState::kRestoring:
      status = RestoreNow(task.id);
      break;
    default:
      status = ReturnToArchive(task.id);
      break;
  }
  if (status.ok()) return std::nullopt;
  STRATA_LOG(kError, "snapshot ", task.id, ": ", a->operation, " failed: ", status.ToString());
  if (absl::IsUnavailable(status) || absl::IsAborted(status)) {
    // The archive store or the region's lease: tried again in a while.
    return Task{.kind = Task::Kind::kTier,
                .id = task.id,
                .not_before_micros = now + 10'000'000,
                .retry = true};
  }
  // Recorded as failed: an archival leaves the snapshot standard, a restore archived.
  absl::StatusOr<util::SharedHold> shared = EnterShared();
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::optional<ArchiveRecord>> now_a =
      shared.ok() ? GetArchiveRecord(task.id) : shared.status();
  if (!now_a.ok() || !now_a->has_value() || (*now_a)->state != a->state) return std::nullopt;
  ArchiveRecord failed = **now_a;
  failed.status = "failed";
  failed.detail = std::string(status.message());
  if (failed.state == TierState::kArchiving) failed.state = TierState::kStandard;
  if (failed.state == TierState::kRestoring) failed.state = TierState::kArchived;
  meta::WriteBatch batch;
  batch.Put(meta::ArchiveKey(task.id), failed.Encode());
  if (absl::Status s = catalog_->Write(batch); !s.ok()) {
    // Still in progress in the catalog: the next open runs it again.
    STRATA_LOG(kError, "snapshot ", task.id, ": recording the failure: ", s.ToString());
    return std::nullopt;
  }
  if (failed.state == TierState::kStandard) QueueArchiveDeletion(task.id);
  return std::nullopt;
}

absl::Status RegionImpl::ArchiveNow(const std::string& snapshot_id) {
  meta::SnapshotRecord r;
  SnapshotTree::Ancestry ancestry;
  {
    STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, EnterShared());
    absl::MutexLock lock(&mu_);
    STRATA_ASSIGN_OR_RETURN(r, FindCompletedSnapshot(*tree_, snapshot_id));
    STRATA_ASSIGN_OR_RETURN(ancestry, tree_->Ancestors(snapshot_id));
  }
  // Part by part: the entries each chunk resolves to from the snapshot (a window of the resolve
  // index), their chunks as stored, one object. The snapshot cannot be deleted while it is being
  // archived, so these chunks stay referenced, and what it resolves to stays the same: a
  // deleted ancestor's prune moves its entries into a child (still in `ancestry`), between
  // windows or not.
  STRATA_ASSIGN_OR_RETURN(archive::ArchiveStore * store, Archive());
  ArchiveManifest manifest;
  manifest.snapshot = r;
  manifest.chunk_size_bytes = chunk_size_bytes_;
  const uint64_t chunk_count = (r.volume_size_bytes + chunk_size_bytes_ - 1) / chunk_size_bytes_;
  const size_t per_part = std::max<uint64_t>(1, options_.archive.part_bytes / chunk_size_bytes_);
  std::optional<uint64_t> next = 0;  // The first chunk of the next window.
  std::vector<std::byte> buffer;
  while (next.has_value()) {
    std::vector<std::pair<uint64_t, chunk::ChunkKey>> chunks;
    uint64_t last_chunk = UINT64_MAX;
    const uint64_t from = *next;
    next.reset();
    absl::Status bad;
    STRATA_RETURN_IF_ERROR(
        catalog_->Scan(meta::ResolveTreePrefix(r.tree), meta::ResolvePrefix(r.tree, from),
                       [&](absl::string_view key, absl::string_view value) {
                         const uint64_t c = meta::ResolveKeyChunk(key);
                         if (c == last_chunk || !ancestry->contains(meta::ResolveKeySeq(key)))
                           return true;
                         if (c >= chunk_count) return false;
                         if (chunks.size() == per_part) {
                           next = c;  // Full: the next window starts here.
                           return false;
                         }
                         last_chunk = c;
                         absl::StatusOr<ChunkEntry> entry = DecodeEntry(value);
                         if (!entry.ok()) {
                           bad = entry.status();
                           return false;
                         }
                         if (entry->has_value()) chunks.emplace_back(c, **entry);
                         return true;
                       }));
    STRATA_RETURN_IF_ERROR(bad);
    if (chunks.empty()) break;
    std::vector<chunk::ChunkKey> keys;
    std::vector<size_t> sizes;
    size_t total = 0;
    for (const auto& [c, key] : chunks) {
      keys.push_back(key);
      sizes.push_back(chunk_size_bytes_ +
                      (key.domain == chunk::kPlaintextDomain ? 0 : volume::kSivBytes));
      total += sizes.back();
    }
    buffer.resize(total);
    std::vector<std::span<std::byte>> outs;
    for (size_t i = 0, offset = 0; i < chunks.size(); offset += sizes[i], ++i) {
      outs.emplace_back(buffer.data() + offset, sizes[i]);
    }
    STRATA_RETURN_IF_ERROR(chunks_->ReadMany(keys, outs));
    std::string part;
    part.reserve(total + chunks.size() * 16);
    for (size_t i = 0; i < chunks.size(); ++i) {
      AppendArchiveEntry(part, chunks[i].first, keys[i].domain,
                         {reinterpret_cast<const char*>(outs[i].data()), outs[i].size()});
    }
    const std::string name = ArchivePartName(snapshot_id, manifest.parts.size());
    STRATA_RETURN_IF_ERROR(store->Put(name, part));
    manifest.chunk_count += chunks.size();
    manifest.stored_bytes += total;
    manifest.parts.push_back({name, part.size(), ArchiveChecksum(part)});
  }
  STRATA_RETURN_IF_ERROR(store->Put(ArchiveManifestName(snapshot_id), manifest.Encode()));

  // Complete: the archive is the snapshot's now; its chunks leave as a deletion's do.
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, EnterShared());
  absl::MutexLock lock(&mu_);
  STRATA_ASSIGN_OR_RETURN(std::optional<ArchiveRecord> a, GetArchiveRecord(snapshot_id));
  if (!a.has_value() || a->state != TierState::kArchiving) return absl::OkStatus();
  STRATA_ASSIGN_OR_RETURN(meta::SnapshotRecord current, FindSnapshot(*tree_, snapshot_id));
  STRATA_RETURN_IF_ERROR(CheckArchivable(current));  // An image may have taken it meanwhile.
  a->snapshot = current;                             // Its tags and lock as they are now.
  a->state = TierState::kArchived;
  a->status = "completed";
  a->archived_micros = env_->NowMicros();
  a->chunk_count = manifest.chunk_count;
  a->stored_bytes = manifest.stored_bytes;
  current.deleted = true;
  meta::WriteBatch batch;
  batch.Put(meta::ArchiveKey(snapshot_id), a->Encode());
  batch.Put(meta::SnapshotKey(snapshot_id), current.Encode());
  STRATA_RETURN_IF_ERROR(DropFastRestores(snapshot_id, batch));
  STRATA_RETURN_IF_ERROR(catalog_->Write(batch));
  tree_->Put(current);
  tasks_.Push({Task::Kind::kPrune, snapshot_id, nullptr, 0});
  STRATA_LOG(kInfo, "snapshot ", snapshot_id, ": archived (", manifest.chunk_count, " chunks, ",
             manifest.stored_bytes, " bytes, ", manifest.parts.size(), " parts) to ",
             store->Describe());
  return absl::OkStatus();
}

absl::Status RegionImpl::FinishRestoreLocked(ArchiveRecord& a, meta::WriteBatch& batch) {
  const uint64_t now = env_->NowMicros();
  a.status = "completed";
  a.restore_seq = 0;
  a.restore_tree = 0;
  if (a.restore_days == 0) {
    a.state = TierState::kStandard;
    a.restore_expiry_micros = 0;
  } else {
    a.state = TierState::kRestored;
    a.restore_expiry_micros = now + a.restore_days * day_micros();
  }
  batch.Put(meta::ArchiveKey(a.snapshot.id), a.Encode());
  STRATA_RETURN_IF_ERROR(catalog_->Write(batch));
  if (a.state == TierState::kStandard) {
    QueueArchiveDeletion(a.snapshot.id);
  } else {
    tasks_.Push({.kind = Task::Kind::kTier,
                 .id = a.snapshot.id,
                 .not_before_micros = a.restore_expiry_micros});
  }
  STRATA_LOG(kInfo, "snapshot ", a.snapshot.id, ": restored from the archive (", a.operation, ")");
  return absl::OkStatus();
}

absl::Status RegionImpl::RestoreNow(const std::string& snapshot_id) {
  ArchiveRecord a;
  meta::SnapshotRecord target;  // Where the manifest goes: a new root (seq, tree).
  {
    STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, EnterShared());
    absl::MutexLock lock(&mu_);
    STRATA_ASSIGN_OR_RETURN(std::optional<ArchiveRecord> got, GetArchiveRecord(snapshot_id));
    if (!got.has_value() || got->state != TierState::kRestoring) return absl::OkStatus();
    a = *std::move(got);
    if (tree_->Get(snapshot_id).has_value()) {
      // Its data never left (a volume or two branches needed it) unless a merge into its child
      // is under way: finished first, then what is left is whole.
      STRATA_RETURN_IF_ERROR(Prune(snapshot_id));
      if (std::optional<meta::SnapshotRecord> kept = tree_->Get(snapshot_id); kept.has_value()) {
        kept->deleted = false;
        kept->lock = a.snapshot.lock;  // Locked or unlocked while archived.
        meta::WriteBatch batch;
        batch.Put(meta::SnapshotKey(snapshot_id), kept->Encode());
        STRATA_RETURN_IF_ERROR(FinishRestoreLocked(a, batch));
        tree_->Put(*kept);
        return absl::OkStatus();
      }
    }
    if (a.restore_seq != 0) {
      // A restore that stopped part way: its pieces go, then it runs again.
      meta::SnapshotRecord partial;
      partial.seq = a.restore_seq;
      partial.tree = a.restore_tree;
      STRATA_RETURN_IF_ERROR(DropManifest(partial));
    } else {
      a.restore_seq = next_seq_;
      a.restore_tree = NewTreeId();
      meta::WriteBatch batch;
      batch.Put(meta::ArchiveKey(snapshot_id), a.Encode());
      PutNextSeq(batch, next_seq_ + 1);
      STRATA_RETURN_IF_ERROR(catalog_->Write(batch));
      ++next_seq_;
    }
    target.seq = a.restore_seq;
    target.tree = a.restore_tree;
  }
  // The chunks back into the main store and a full manifest, piece by piece (the new seq and
  // tree are this restore's alone until its record commits).
  STRATA_ASSIGN_OR_RETURN(archive::ArchiveStore * store, Archive());
  STRATA_ASSIGN_OR_RETURN(std::string manifest_bytes, store->Get(ArchiveManifestName(snapshot_id)));
  STRATA_ASSIGN_OR_RETURN(ArchiveManifest manifest, ArchiveManifest::Decode(manifest_bytes));
  if (manifest.chunk_size_bytes != chunk_size_bytes_ || manifest.snapshot.id != snapshot_id) {
    return absl::DataLossError(absl::StrCat("archive of ", snapshot_id, " in ", store->Describe(),
                                            ": its manifest is not this snapshot's"));
  }
  const size_t piece = std::max<size_t>(1, options_.manifest_piece_entries);
  uint64_t restored = 0;
  meta::WriteBatch batch;
  std::vector<chunk::ChunkKey> pins;
  auto commit = [&]() -> absl::Status {
    absl::Status s = chunks_->Commit(std::move(batch), pins, {});
    if (!s.ok()) chunks_->Unpin(pins);
    batch = meta::WriteBatch();
    pins.clear();
    return s;
  };
  struct Entry {
    uint64_t chunk_index;
    uint32_t domain;
    absl::string_view stored;
  };
  for (const ArchiveManifest::Part& part : manifest.parts) {
    STRATA_ASSIGN_OR_RETURN(std::string bytes, store->Get(part.name));
    std::vector<Entry> entries;
    STRATA_RETURN_IF_ERROR(ForEachArchiveEntry(
        part, bytes, [&](uint64_t c, uint32_t domain, absl::string_view stored) {
          entries.push_back({c, domain, stored});
          return absl::OkStatus();
        }));
    // The part's chunks into the store, PutConcurrency() at once (on RADOS each Put waits a
    // round trip), then into the manifest in order.
    std::vector<std::optional<chunk::ChunkKey>> keys(entries.size());
    std::atomic<size_t> cursor{0};
    absl::Mutex failed_mu;
    absl::Status failed;  // The first Put that failed.
    util::RunOnThreads(chunks_->PutConcurrency(), [&] {
      for (size_t i; (i = cursor.fetch_add(1)) < entries.size();) {
        absl::StatusOr<chunk::ChunkKey> key = chunks_->Put(
            entries[i].domain, {reinterpret_cast<const std::byte*>(entries[i].stored.data()),
                                entries[i].stored.size()});
        if (key.ok()) {
          keys[i] = *key;
          continue;
        }
        absl::MutexLock lock(&failed_mu);
        if (failed.ok()) failed = key.status();
        cursor.store(entries.size());  // The rest is not worth storing.
      }
    });
    if (!failed.ok()) {
      for (const std::optional<chunk::ChunkKey>& key : keys) {
        if (key.has_value()) chunks_->Unpin({&*key, 1});
      }
      chunks_->Unpin(pins);
      return failed;
    }
    for (size_t i = 0; i < entries.size(); ++i) {
      const std::string value = EncodeEntry(*keys[i]);
      batch.Put(meta::ManifestKey(target.seq, entries[i].chunk_index), value);
      batch.Put(meta::ResolveKey(target.tree, entries[i].chunk_index, target.seq), value);
      pins.push_back(*keys[i]);
      ++restored;
      if (pins.size() < piece) continue;
      if (absl::Status s = commit(); !s.ok()) {
        for (size_t j = i + 1; j < entries.size(); ++j) chunks_->Unpin({&*keys[j], 1});
        return s;
      }
    }
  }
  if (!pins.empty()) STRATA_RETURN_IF_ERROR(commit());
  if (restored != manifest.chunk_count) {
    return absl::DataLossError(absl::StrCat("archive of ", snapshot_id, ": ", restored,
                                            " chunks where its manifest names ",
                                            manifest.chunk_count));
  }

  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, EnterShared());
  absl::MutexLock lock(&mu_);
  STRATA_ASSIGN_OR_RETURN(std::optional<ArchiveRecord> now_a, GetArchiveRecord(snapshot_id));
  if (!now_a.has_value() || now_a->state != TierState::kRestoring) return absl::OkStatus();
  a = *std::move(now_a);
  meta::SnapshotRecord r = a.snapshot;  // Its id, tags, lock and key as archived.
  r.seq = target.seq;
  r.tree = target.tree;
  r.parent_id.clear();
  r.state = meta::SnapshotRecordState::kCompleted;
  r.deleted = false;
  r.recycled_micros = r.recycle_until_micros = 0;
  r.changed_chunk_count = restored;
  r.incremental_bytes = restored * chunk_size_bytes_;
  if (r.encryption.encrypted()) {
    if (absl::Status s = encryption_->LoadDomainKey(r.encryption, r.owner); !s.ok()) {
      STRATA_LOG(kWarning, "snapshot ", r.id,
                 ": restored, but its data key is not usable: ", s.ToString());
    }
  }
  meta::WriteBatch done;
  done.Put(meta::SnapshotKey(r.id), r.Encode());
  STRATA_RETURN_IF_ERROR(FinishRestoreLocked(a, done));
  tree_->Put(r);
  return absl::OkStatus();
}

absl::Status RegionImpl::ReturnToArchive(const std::string& snapshot_id) {
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, EnterShared());
  absl::MutexLock lock(&mu_);
  STRATA_ASSIGN_OR_RETURN(std::optional<ArchiveRecord> a, GetArchiveRecord(snapshot_id));
  if (!a.has_value() || a->state != TierState::kRestored ||
      a->restore_expiry_micros > env_->NowMicros()) {
    return absl::OkStatus();
  }
  absl::StatusOr<meta::SnapshotRecord> r = FindSnapshot(*tree_, snapshot_id);
  if (!r.ok()) return absl::OkStatus();  // Deleted (or binned): the deletion took the archive.
  if (absl::Status s = CheckArchivable(*r); !s.ok()) {
    // Registered in an image or copied meanwhile: stays restored for another day.
    STRATA_LOG(kWarning, "snapshot ", snapshot_id,
               ": its temporary restore ended but it stays standard a day more: ", s.ToString());
    a->restore_expiry_micros = env_->NowMicros() + day_micros();
    meta::WriteBatch batch;
    batch.Put(meta::ArchiveKey(snapshot_id), a->Encode());
    STRATA_RETURN_IF_ERROR(catalog_->Write(batch));
    tasks_.Push({.kind = Task::Kind::kTier,
                 .id = snapshot_id,
                 .not_before_micros = a->restore_expiry_micros});
    return absl::OkStatus();
  }
  a->snapshot = *r;
  a->state = TierState::kArchived;
  a->restore_expiry_micros = 0;
  r->deleted = true;
  meta::WriteBatch batch;
  batch.Put(meta::ArchiveKey(snapshot_id), a->Encode());
  batch.Put(meta::SnapshotKey(snapshot_id), r->Encode());
  STRATA_RETURN_IF_ERROR(DropFastRestores(snapshot_id, batch));
  STRATA_RETURN_IF_ERROR(catalog_->Write(batch));
  tree_->Put(*r);
  tasks_.Push({Task::Kind::kPrune, snapshot_id, nullptr, 0});
  STRATA_LOG(kInfo, "snapshot ", snapshot_id, ": its temporary restore ended; archived again");
  return absl::OkStatus();
}

}  // namespace strata::region
