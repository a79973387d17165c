// RegionImpl: open, recovery after a stop, the clean stop, ids, store maintenance.
#include "region/region_impl.h"

#include <unistd.h>

#include <filesystem>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "region/kms_catalog_storage.h"
#include "util/coding.h"
#include "util/log.h"
#include "util/status_macros.h"

namespace strata::region {

namespace {

bool IsPowerOfTwo(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

// The RADOS object whose omap is a region's catalog (docs/formats/rados.md).
inline constexpr char kRadosCatalogObject[] = "catalog";

}  // namespace

RegionImpl::RegionImpl(Env* env, std::string name, std::string dir, const StoreOptions& options,
                       std::shared_ptr<rados::Cluster> cluster)
    : env_(env),
      name_(std::move(name)),
      dir_(std::move(dir)),
      options_(options),
      cluster_(std::move(cluster)),
      tasks_(env, [this](Task task) { return RunTask(std::move(task)); }) {}

absl::StatusOr<std::unique_ptr<RegionImpl>> RegionImpl::Open(
    Env* env, const std::string& name, const std::string& dir, const StoreOptions& options,
    std::shared_ptr<rados::Cluster> cluster) {
  std::unique_ptr<RegionImpl> region(new RegionImpl(env, name, dir, options, std::move(cluster)));
  STRATA_RETURN_IF_ERROR(region->Init());
  return region;
}

std::string RegionImpl::HeadPath(const std::string& volume_id) const {
  return absl::StrCat(dir_, "/heads/", volume_id);
}

absl::Status RegionImpl::Init() ABSL_NO_THREAD_SAFETY_ANALYSIS {
  std::error_code ec;
  std::filesystem::create_directories(cluster_ != nullptr ? dir_ : dir_ + "/catalog", ec);
  if (ec) return absl::InternalError(absl::StrCat("mkdir ", dir_, ": ", ec.message()));
  STRATA_RETURN_IF_ERROR(env_->CreateDirs(dir_ + "/heads"));
  if (cluster_ != nullptr) {
    const std::string name_space = cluster_->RegionNamespace(name_);
    STRATA_ASSIGN_OR_RETURN(
        claim_, cluster_->Claim(name_space, kRadosCatalogObject, cluster_->options().node_id,
                                absl::StrCat("stratad pid ", getpid(), ", data dir ", dir_)));
    STRATA_ASSIGN_OR_RETURN(
        std::unique_ptr<meta::Catalog> base,
        meta::Catalog::OpenRados(cluster_->IndexPool(name_space), kRadosCatalogObject));
    meta::SharedCatalogOptions shared;
    shared.node_id = cluster_->options().node_id;
    shared.description = absl::StrCat("stratad pid ", getpid(), ", data dir ", dir_);
    shared.wait = absl::Seconds(std::max(30u, 2 * cluster_->options().timeout_seconds));
    STRATA_ASSIGN_OR_RETURN(
        std::unique_ptr<meta::SharedCatalog> catalog,
        meta::SharedCatalog::Open(std::move(base), cluster_->IndexPool(name_space),
                                  kRadosCatalogObject, std::move(shared)));
    shared_catalog_ = catalog.get();
    shared_ = catalog.get();
    catalog_ = std::move(catalog);
    head_pool_ = cluster_->DataPool(name_space);
    volume_locks_ = std::make_unique<rados::VolumeLocks>(
        cluster_.get(), cluster_->IndexPool(name_space), cluster_->options().node_id,
        options_.volume_lease_seconds);
  } else {
    STRATA_ASSIGN_OR_RETURN(catalog_, meta::Catalog::OpenRocksDb(env_, dir_ + "/catalog"));
  }
  // Opening recovers and loads shared state: one node at a time.
  STRATA_ASSIGN_OR_RETURN(util::SharedHold held, shared_->Enter());
  {
    absl::MutexLock lock(&reload_mu_);
    loaded_changes_ = shared_->foreign_changes();
  }
  kms_storage_ = std::make_unique<KmsCatalogStorage>(*catalog_);
  crypto::KmsOptions kms_options;
  if (shared_catalog_ != nullptr) kms_options.shared = shared_;
  kms_options.region = name_;
  kms_options.storage = kms_storage_.get();
  kms_options.root_key = options_.kms_root_key;
  STRATA_ASSIGN_OR_RETURN(kms_, crypto::KmsImpl::Open(std::move(kms_options)));
  encryption_ = std::make_unique<EncryptionPolicy>(*catalog_, *kms_, domain_keys_);
  recycle_rules_ = std::make_unique<RecycleRules>(*catalog_, *shared_, env_, day_micros());

  STRATA_ASSIGN_OR_RETURN(std::optional<std::string> format, catalog_->Get(meta::FormatKey()));
  const bool fresh = !format.has_value();
  if (fresh) {
    if (!IsPowerOfTwo(options_.chunk_size_bytes) || options_.chunk_size_bytes < 4096 ||
        options_.chunk_size_bytes > (4u << 20)) {
      return absl::InvalidArgumentError("chunk size must be a power of two from 4 KiB to 4 MiB");
    }
    std::string value;
    util::PutFixed32(value, meta::kFormatVersion);
    util::PutFixed64(value, options_.chunk_size_bytes);
    meta::WriteBatch batch;
    batch.Put(meta::FormatKey(), value);
    STRATA_RETURN_IF_ERROR(catalog_->Write(batch));
    format = value;
  }
  util::Decoder in(*format);
  uint32_t version = 0;
  if (!in.GetFixed32(version) || !in.GetFixed64(chunk_size_bytes_) || !in.done() ||
      !IsPowerOfTwo(chunk_size_bytes_)) {
    return absl::DataLossError(absl::StrCat("region ", name_, ": corrupt format record"));
  }
  if (version != meta::kFormatVersion) {
    return absl::FailedPreconditionError(
        absl::StrCat("region ", name_, ": format version ", version,
                     " is not supported (this build reads ", meta::kFormatVersion, ")"));
  }
  if (cluster_ != nullptr) {
    STRATA_ASSIGN_OR_RETURN(
        chunks_, chunk::ChunkStore::OpenRadosStore(
                     cluster_->DataPool(cluster_->RegionNamespace(name_)), catalog_.get(),
                     {.compression = options_.compression,
                      .gc_grace_seconds = cluster_->options().gc_grace_seconds}));
  } else {
    STRATA_ASSIGN_OR_RETURN(
        chunks_, chunk::ChunkStore::OpenSegmentStore(env_, dir_ + "/segments", catalog_.get(),
                                                     {.compression = options_.compression}));
  }
  tree_ = std::make_unique<SnapshotTree>(catalog_.get());
  STRATA_RETURN_IF_ERROR(tree_->Load());
  listings_ = std::make_unique<BlockListings>(*catalog_, *tree_, chunk_size_bytes_, name_);
  for (const meta::SnapshotRecord& snap : tree_->All()) {
    if (snap.encryption.encrypted()) (void)encryption_->LoadDomainKey(snap.encryption, snap.owner);
  }
  STRATA_RETURN_IF_ERROR(LoadNextSeq());
  STRATA_ASSIGN_OR_RETURN(std::optional<std::string> clean_mark, catalog_->Get(meta::CleanKey()));
  // A node with no volume yet (a new one, on RADOS) has nothing to rescan.
  bool has_volumes = false;
  STRATA_RETURN_IF_ERROR(catalog_->Scan(meta::kVolumePrefix, "", [&](auto, auto) {
    has_volumes = true;
    return false;
  }));
  const bool clean = clean_mark.has_value() || fresh || !has_volumes;
  if (!clean) STRATA_LOG(kInfo, "region ", name_, ": unclean stop; changed-block tracking rescans");
  STRATA_RETURN_IF_ERROR(RecoverPendingSnapshots(clean));
  STRATA_RETURN_IF_ERROR(LoadVolumes(clean));
  {
    absl::MutexLock lock(&mu_);
    STRATA_RETURN_IF_ERROR(ReopenResumableDirectSnapshots());
  }
  meta::WriteBatch batch;
  batch.Delete(meta::CleanKey());
  STRATA_RETURN_IF_ERROR(catalog_->Write(batch));

  // Resume interrupted work: deletions and hydrations.
  for (const meta::SnapshotRecord& r : tree_->All()) {
    if (r.deleted) tasks_.Push({Task::Kind::kPrune, r.id, nullptr, 0});
  }
  for (const auto& [id, volume] : volumes_) {
    if (volume->record().hydrating) tasks_.Push({Task::Kind::kHydrate, id, nullptr, 0});
  }
  StartRecycleSweeps();
  ResumeTiering();
  if (options_.background_work) tasks_.StartWorker();
  if (volume_locks_ != nullptr) {
    volume_locks_->set_release_request([this](const std::string& id) { HandOverVolume(id); });
  }
  opened_ = true;
  return absl::OkStatus();
}

absl::Status RegionImpl::RecoverPendingSnapshots(bool clean) {
  // A snapshot pending at a stop cannot finish: its frozen chunks may since have been
  // overwritten. It fails; its volume's next snapshot picks the changes up (after the rescan).
  // A direct snapshot that asked to survive the restart stays open on its builder instead.
  meta::WriteBatch batch;
  STRATA_RETURN_IF_ERROR(catalog_->Scan(
      meta::ResumableDirectKey(""), "", [&](absl::string_view key, absl::string_view) {
        const std::string id(key.substr(meta::ResumableDirectKey("").size()));
        std::optional<meta::SnapshotRecord> r = tree_->Get(id);
        if (r.has_value() && r->state == meta::SnapshotRecordState::kPending) {
          resumable_.insert(id);
        } else {
          batch.Delete(std::string(key));  // Completed or failed since.
        }
        return true;
      }));
  // Only this node's: a snapshot pending on another node (RADOS) is that node's to finish.
  std::set<std::string> own_volumes;
  STRATA_RETURN_IF_ERROR(catalog_->Scan(meta::kVolumePrefix, "", [&](absl::string_view key, auto) {
    own_volumes.emplace(key.substr(meta::kVolumePrefix.size()));
    return true;
  }));
  std::vector<meta::SnapshotRecord> failed;
  for (meta::SnapshotRecord r : tree_->All()) {
    if (r.state == meta::SnapshotRecordState::kError) failed.push_back(r);
    if (r.state != meta::SnapshotRecordState::kPending || resumable_.contains(r.id) ||
        !own_volumes.contains(r.volume_id)) {
      continue;
    }
    r.state = meta::SnapshotRecordState::kError;
    r.state_message = clean ? "the store stopped before the snapshot completed"
                            : "interrupted by an unclean stop before the snapshot completed";
    batch.Put(meta::SnapshotKey(r.id), r.Encode());
    tree_->Put(r);
    failed.push_back(r);
    STRATA_LOG(kWarning, "snapshot ", r.id, ": ", r.state_message);
  }
  STRATA_RETURN_IF_ERROR(catalog_->Write(batch));
  // Manifest pieces a failed snapshot committed before its failure or the stop.
  absl::MutexLock lock(&mu_);
  for (const meta::SnapshotRecord& r : failed) STRATA_RETURN_IF_ERROR(DropManifest(r));
  return absl::OkStatus();
}

absl::Status RegionImpl::LoadVolumes(bool clean) ABSL_NO_THREAD_SAFETY_ANALYSIS {
  std::vector<meta::VolumeRecord> records;
  absl::Status bad;
  STRATA_RETURN_IF_ERROR(
      catalog_->Scan(meta::kVolumePrefix, "", [&](absl::string_view key, absl::string_view v) {
        absl::StatusOr<meta::VolumeRecord> r = meta::VolumeRecord::Decode(v);
        if (!r.ok()) {
          bad = absl::DataLossError(absl::StrCat(r.status().message(), " (key ", key, ")"));
          return false;
        }
        records.push_back(*std::move(r));
        return true;
      }));
  STRATA_RETURN_IF_ERROR(bad);
  std::set<std::string> known_heads;
  meta::WriteBatch fixes;
  for (meta::VolumeRecord& r : records) {
    // The last snapshot must be one that exists and did not fail.
    const std::string original = r.last_snapshot_id;
    r.last_snapshot_id = LastUsableSnapshot(r.last_snapshot_id, {});
    if (r.last_snapshot_id != original) fixes.Put(meta::VolumeKey(r.id), r.Encode());
    known_heads.insert(r.id);
    if (absl::Status locked = LockHead(r, false); !locked.ok()) {
      // Another node took it over while this one was down and has not moved it yet.
      if (!absl::IsFailedPrecondition(locked)) return locked;
      STRATA_LOG(kWarning, "region ", name_, ": volume ", r.id,
                 " not served here: ", locked.message());
      continue;
    }
    STRATA_ASSIGN_OR_RETURN(std::unique_ptr<volume::Head> head, OpenHead(r, false));
    const std::string id = r.id;
    if (r.encryption.encrypted()) {
      if (absl::Status unwrapped = encryption_->LoadDomainKey(r.encryption, r.owner);
          !unwrapped.ok()) {
        STRATA_LOG(kWarning, "region ", name_, ": volume ", id,
                   " stays closed: ", unwrapped.message());
      }
    }
    std::unique_ptr<VolumeImpl> volume = MakeVolume(std::move(r), std::move(head));
    STRATA_RETURN_IF_ERROR(volume->LoadBitmaps(clean));
    volumes_[id] = std::move(volume);
  }
  STRATA_RETURN_IF_ERROR(catalog_->Write(fixes));
  // Builders of direct snapshots interrupted by the stop: their snapshots failed above.
  std::vector<std::string> builders;
  std::set<std::string> kept;
  for (const std::string& id : resumable_) kept.insert(tree_->Get(id)->volume_id);
  for (const auto& [id, volume] : volumes_) {
    if (volume->record().hidden && !kept.contains(id)) builders.push_back(id);
  }
  for (const std::string& id : builders) STRATA_RETURN_IF_ERROR(DeleteVolumeLocked(id));
  // Heads whose volume record is gone belong to deletions interrupted after their commit.
  STRATA_ASSIGN_OR_RETURN(std::vector<std::string> names, env_->ListDir(dir_ + "/heads"));
  for (const std::string& name : names) {
    std::string volume_id;
    if (volume::FileHead::ParseFileName(name, volume_id) && !known_heads.contains(volume_id)) {
      STRATA_RETURN_IF_ERROR(env_->DeleteFile(absl::StrCat(dir_, "/heads/", name)));
    }
  }
  return absl::OkStatus();
}

std::string RegionImpl::LastUsableSnapshot(std::string id,
                                           const std::set<std::string>& failing) const {
  while (!id.empty()) {
    std::optional<meta::SnapshotRecord> s = tree_->Get(id);
    if (s.has_value() && s->state != meta::SnapshotRecordState::kError && !failing.contains(id)) {
      break;
    }
    id = s.has_value() ? s->parent_id : std::string();
  }
  return id;
}

RegionImpl::~RegionImpl() {
  // No more hand-overs: the volumes are closing.
  if (volume_locks_ != nullptr) volume_locks_->set_release_request(nullptr);
  tasks_.StopWorker();
  // A region whose open failed part way has nothing to finish, and must not claim a clean stop.
  if (!opened_) {
    volume_locks_.reset();
    return;
  }
  // Finish what must not be left half done: pending snapshots and deletions. Hydration resumes
  // at the next open.
  tasks_.RunAll();
  absl::Status status;
  meta::WriteBatch batch;
  absl::MutexLock lock(&mu_);
  for (auto& [id, volume] : volumes_) {
    if (status.ok()) status = volume->Flush();
    if (status.ok()) status = volume->SaveDirtyBitmap(batch);
  }
  if (status.ok()) {
    batch.Put(meta::CleanKey(), "");
    status = catalog_->Write(batch);
  }
  if (!status.ok()) {
    STRATA_LOG(kError, "region ", name_, ": unclean stop: ", status.ToString());
  } else {
    ReleaseVolumeLocks();  // Other nodes may take the volumes at once.
  }
  volume_locks_.reset();
  volumes_.clear();
}

uint64_t RegionImpl::NewTreeId() const {
  return (static_cast<uint64_t>(std::random_device{}()) << 32) ^ std::random_device{}() ^
         env_->NowMicros();
}

std::string RegionImpl::NewId(absl::string_view prefix) {
  // random_device (getrandom) per id: a forked or restarted process never repeats a sequence.
  std::random_device random;
  for (;;) {
    const uint64_t hi = random() & 0xF;
    const uint64_t lo = (static_cast<uint64_t>(random()) << 32) ^ random() ^ (++id_state_);
    std::string id = absl::StrFormat("%s-%01x%016x", prefix, hi, lo);
    if (!volumes_.contains(id) && !tree_->Get(id).has_value()) return id;
  }
}

absl::StatusOr<util::SharedHold> RegionImpl::EnterShared() {
  STRATA_ASSIGN_OR_RETURN(util::SharedHold held, shared_->Enter());
  absl::MutexLock lock(&reload_mu_);
  if (const uint64_t changes = shared_->foreign_changes(); changes != loaded_changes_) {
    STRATA_RETURN_IF_ERROR(ReloadShared());
    loaded_changes_ = changes;
  }
  return held;
}

absl::Status RegionImpl::ReloadShared() {
  STRATA_RETURN_IF_ERROR(tree_->Load());
  for (const meta::SnapshotRecord& snap : tree_->All()) {
    if (snap.encryption.encrypted()) (void)encryption_->LoadDomainKey(snap.encryption, snap.owner);
  }
  return LoadNextSeq();
}

absl::Status RegionImpl::LoadNextSeq() {
  STRATA_ASSIGN_OR_RETURN(std::optional<std::string> seq, catalog_->Get(meta::NextSeqKey()));
  uint64_t next = 1;
  if (seq.has_value()) {
    util::Decoder in(*seq);
    if (!in.GetFixed64(next) || !in.done()) return absl::DataLossError("corrupt next_seq record");
  }
  absl::MutexLock lock(&mu_);
  next_seq_ = next;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> RegionImpl::OtherNodes() {
  if (shared_catalog_ == nullptr) return std::vector<std::string>();
  STRATA_ASSIGN_OR_RETURN(std::vector<std::string> nodes, shared_catalog_->Nodes());
  std::erase(nodes, shared_catalog_->node_id());
  return nodes;
}

absl::StatusOr<std::vector<std::pair<std::string, meta::VolumeRecord>>>
RegionImpl::OtherNodesVolumes() {
  std::vector<std::pair<std::string, meta::VolumeRecord>> out;
  STRATA_ASSIGN_OR_RETURN(std::vector<std::string> nodes, OtherNodes());
  absl::Status bad;
  for (const std::string& node : nodes) {
    const std::string prefix = meta::SharedCatalog::NodeKey(node, meta::kVolumePrefix);
    STRATA_RETURN_IF_ERROR(
        catalog_->Scan(prefix, "", [&](absl::string_view key, absl::string_view v) {
          absl::StatusOr<meta::VolumeRecord> r = meta::VolumeRecord::Decode(v);
          if (!r.ok()) {
            bad = absl::DataLossError(absl::StrCat(r.status().message(), " (key ", key, ")"));
            return false;
          }
          out.emplace_back(node, *std::move(r));
          return true;
        }));
    STRATA_RETURN_IF_ERROR(bad);
  }
  return out;
}

absl::StatusOr<bool> RegionImpl::OtherNodeVolumeUses(const std::string& id) {
  STRATA_ASSIGN_OR_RETURN(auto others, OtherNodesVolumes());
  for (const auto& [node, record] : others) {
    if (record.last_snapshot_id == id) return true;
  }
  return false;
}

absl::StatusOr<std::optional<std::string>> RegionImpl::NodeServingVolume(const std::string& id) {
  STRATA_ASSIGN_OR_RETURN(std::vector<std::string> nodes, OtherNodes());
  for (const std::string& node : nodes) {
    STRATA_ASSIGN_OR_RETURN(std::optional<std::string> record,
                            catalog_->Get(meta::SharedCatalog::NodeKey(node, meta::VolumeKey(id))));
    if (record.has_value()) return node;
  }
  return std::nullopt;
}

absl::StatusOr<uint64_t> RegionImpl::CollectGarbage() { return chunks_->CollectGarbage(); }

absl::StatusOr<StoreStats> RegionImpl::GetStats() {
  STRATA_ASSIGN_OR_RETURN(chunk::ChunkStoreStats s, chunks_->GetStats());
  return StoreStats{s.chunk_count, s.referenced_chunk_count, s.stored_bytes, s.segment_file_bytes,
                    s.segment_count};
}

absl::Status RegionImpl::RunBackgroundWork() {
  tasks_.RunAll();
  return absl::OkStatus();
}

std::optional<Task> RegionImpl::RunTask(Task task) {
  switch (task.kind) {
    case Task::Kind::kIngest:
      RunIngest(task.pending);
      return std::nullopt;
    case Task::Kind::kPrune: {
      absl::StatusOr<util::SharedHold> shared = EnterShared();
      absl::MutexLock lock(&mu_);
      if (absl::Status s = shared.ok() ? Prune(task.id) : shared.status(); !s.ok()) {
        STRATA_LOG(kError, "snapshot ", task.id,
                   ": deletion failed, retried at next open: ", s.ToString());
      }
      return std::nullopt;
    }
    case Task::Kind::kHydrate:
      return HydrateStep(task.id);
    case Task::Kind::kSweepRecycleBin:
      return SweepRecycleBin(task);
    case Task::Kind::kTier:
      return RunTierTask(task);
  }
  return std::nullopt;
}

}  // namespace strata::region
