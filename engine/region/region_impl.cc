#include "region/region_impl.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <random>
#include <set>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "util/coding.h"
#include "util/log.h"
#include "util/status_macros.h"
#include "volume/tags.h"
#include "xxhash.h"

namespace strata::region {

using volume::ApplyTags;
using volume::ChunkEntry;
using volume::DecodeEntry;
using volume::EncodeEntry;
using volume::Head;
using volume::ValidateTags;
using volume::VolumeDeps;

namespace {

// Hydration copies a slice of chunks, then waits this long; the rate sets the slice size.
inline constexpr uint64_t kHydrateSliceMicros = 100 * 1000;
inline constexpr uint64_t kHydrateUnlimitedSliceChunks = 256;
inline constexpr uint64_t kMaxListResults = 10000;
// The volume id EBS shows for snapshots made with the EBS direct APIs.
inline constexpr char kDirectSnapshotVolumeId[] = "vol-ffffffff";

bool IsPowerOfTwo(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

void PutNextSeq(meta::WriteBatch& batch, uint64_t next_seq) {
  std::string value;
  util::PutFixed64(value, next_seq);
  batch.Put(meta::NextSeqKey(), value);
}

SnapshotState ToState(meta::SnapshotRecordState s) {
  switch (s) {
    case meta::SnapshotRecordState::kPending:
      return SnapshotState::kPending;
    case meta::SnapshotRecordState::kCompleted:
      return SnapshotState::kCompleted;
    case meta::SnapshotRecordState::kError:
      return SnapshotState::kError;
  }
  return SnapshotState::kError;
}

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

// Reads a completed snapshot by resolving each chunk through the tree.
// The KMS's records in the region's catalog, under "k/".
class CatalogKmsStorage final : public crypto::KmsStorage {
 public:
  explicit CatalogKmsStorage(meta::Catalog& catalog) : catalog_(catalog) {}
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> LoadAll() override {
    std::vector<std::pair<std::string, std::string>> out;
    STRATA_RETURN_IF_ERROR(
        catalog_.Scan(meta::kKmsPrefix, "", [&](absl::string_view key, absl::string_view value) {
          out.emplace_back(std::string(key.substr(meta::kKmsPrefix.size())), std::string(value));
          return true;
        }));
    return out;
  }
  absl::Status Put(const std::string& key, const std::string& value) override {
    meta::WriteBatch batch;
    batch.Put(absl::StrCat(meta::kKmsPrefix, key), value);
    return catalog_.Write(batch);
  }
  absl::Status Delete(const std::string& key) override {
    meta::WriteBatch batch;
    batch.Delete(absl::StrCat(meta::kKmsPrefix, key));
    return catalog_.Write(batch);
  }

 private:
  meta::Catalog& catalog_;
};

class SnapshotReader final : public Snapshot {
 public:
  SnapshotReader(const SnapshotTree& tree, chunk::ChunkStore& chunks, const DomainKeys& keys,
                 meta::SnapshotRecord record, SnapshotTree::Ancestry ancestry,
                 uint64_t chunk_size_bytes)
      : tree_(tree),
        chunks_(chunks),
        keys_(keys),
        record_(std::move(record)),
        ancestry_(std::move(ancestry)),
        chunk_size_bytes_(chunk_size_bytes) {}
  const std::string& id() const override { return record_.id; }
  uint64_t size_bytes() const override { return record_.volume_size_bytes; }

  absl::Status Read(uint64_t offset_bytes, std::span<std::byte> out) override {
    if (offset_bytes > size_bytes() || out.size() > size_bytes() - offset_bytes) {
      return absl::InvalidArgumentError(
          absl::StrCat(record_.id, ": range ", offset_bytes, "+", out.size(), " is past the end"));
    }
    if (out.empty()) return absl::OkStatus();
    std::vector<std::byte> buffer(chunk_size_bytes_);
    const uint64_t first = offset_bytes / chunk_size_bytes_;
    const uint64_t last = (offset_bytes + out.size() - 1) / chunk_size_bytes_;
    STRATA_ASSIGN_OR_RETURN(std::vector<ChunkEntry> entries,
                            tree_.ResolveRange(record_.tree, ancestry_, first, last - first + 1));
    for (uint64_t pos = offset_bytes; pos < offset_bytes + out.size();) {
      const uint64_t c = pos / chunk_size_bytes_;
      const uint64_t in_chunk = pos % chunk_size_bytes_;
      const uint64_t n =
          std::min<uint64_t>(chunk_size_bytes_ - in_chunk, offset_bytes + out.size() - pos);
      const ChunkEntry& entry = entries[c - first];
      if (entry.has_value()) {
        STRATA_RETURN_IF_ERROR(keys_.ReadChunk(chunks_, *entry, buffer));
        std::memcpy(out.data() + (pos - offset_bytes), buffer.data() + in_chunk, n);
      } else {
        std::memset(out.data() + (pos - offset_bytes), 0, n);
      }
      pos += n;
    }
    // Deleting a snapshot may merge its entries into its child; a reader that raced with that
    // could have resolved stale entries, so it fails rather than return them.
    std::optional<meta::SnapshotRecord> now = tree_.Get(record_.id);
    if (!now.has_value() || now->deleted) {
      return absl::NotFoundError(absl::StrCat("snapshot ", record_.id, " was deleted"));
    }
    return absl::OkStatus();
  }

 private:
  const SnapshotTree& tree_;
  chunk::ChunkStore& chunks_;
  const DomainKeys& keys_;
  const meta::SnapshotRecord record_;
  const SnapshotTree::Ancestry ancestry_;
  const uint64_t chunk_size_bytes_;
};

}  // namespace

}  // namespace strata::region

namespace strata {

const char* SnapshotStateName(SnapshotState state) {
  switch (state) {
    case SnapshotState::kPending:
      return "pending";
    case SnapshotState::kCompleted:
      return "completed";
    case SnapshotState::kError:
      return "error";
  }
  return "error";
}

}  // namespace strata

namespace strata::region {

RegionImpl::RegionImpl(Env* env, std::string name, std::string dir, const StoreOptions& options)
    : env_(env), name_(std::move(name)), dir_(std::move(dir)), options_(options) {}

absl::StatusOr<std::unique_ptr<RegionImpl>> RegionImpl::Open(Env* env, const std::string& name,
                                                             const std::string& dir,
                                                             const StoreOptions& options) {
  std::unique_ptr<RegionImpl> region(new RegionImpl(env, name, dir, options));
  STRATA_RETURN_IF_ERROR(region->Init());
  return region;
}

std::string RegionImpl::HeadPath(const std::string& volume_id) const {
  return absl::StrCat(dir_, "/heads/", volume_id);
}

absl::Status RegionImpl::Init() ABSL_NO_THREAD_SAFETY_ANALYSIS {
  std::error_code ec;
  std::filesystem::create_directories(dir_ + "/catalog", ec);
  if (ec) return absl::InternalError(absl::StrCat("mkdir ", dir_, ": ", ec.message()));
  STRATA_RETURN_IF_ERROR(env_->CreateDirs(dir_ + "/heads"));
  STRATA_ASSIGN_OR_RETURN(catalog_, meta::Catalog::OpenRocksDb(dir_ + "/catalog"));
  kms_storage_ = std::make_unique<CatalogKmsStorage>(*catalog_);
  crypto::KmsOptions kms_options;
  kms_options.region = name_;
  kms_options.storage = kms_storage_.get();
  kms_options.root_key = options_.kms_root_key;
  STRATA_ASSIGN_OR_RETURN(kms_, crypto::KmsImpl::Open(std::move(kms_options)));

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
  STRATA_ASSIGN_OR_RETURN(
      chunks_, chunk::ChunkStore::OpenSegmentStore(env_, dir_ + "/segments", catalog_.get(),
                                                   {.compression = options_.compression}));
  tree_ = std::make_unique<SnapshotTree>(catalog_.get());
  STRATA_RETURN_IF_ERROR(tree_->Load());
  for (const meta::SnapshotRecord& snap : tree_->All()) {
    if (snap.encryption.encrypted()) (void)LoadDomainKey(snap.encryption, snap.owner);
  }
  STRATA_ASSIGN_OR_RETURN(std::optional<std::string> next_domain,
                          catalog_->Get(meta::NextDomainKey()));
  if (next_domain.has_value()) {
    util::Decoder domain_in(*next_domain);
    if (!domain_in.GetFixed32(next_domain_)) return absl::DataLossError("corrupt next_domain");
  }
  STRATA_ASSIGN_OR_RETURN(std::optional<std::string> seq, catalog_->Get(meta::NextSeqKey()));
  if (seq.has_value()) {
    util::Decoder seq_in(*seq);
    if (!seq_in.GetFixed64(next_seq_)) return absl::DataLossError("corrupt next_seq record");
  }
  STRATA_ASSIGN_OR_RETURN(std::optional<std::string> clean_mark, catalog_->Get(meta::CleanKey()));
  const bool clean = clean_mark.has_value() || fresh;
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
    if (r.deleted) queue_.push_back({Task::Kind::kPrune, r.id, nullptr, 0});
  }
  for (const auto& [id, volume] : volumes_) {
    if (volume->record().hydrating) queue_.push_back({Task::Kind::kHydrate, id, nullptr, 0});
  }
  if (options_.background_work) worker_ = std::thread([this] { WorkerLoop(); });
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
  for (meta::SnapshotRecord r : tree_->All()) {
    if (r.state != meta::SnapshotRecordState::kPending || resumable_.contains(r.id)) continue;
    r.state = meta::SnapshotRecordState::kError;
    r.state_message = clean ? "the store stopped before the snapshot completed"
                            : "interrupted by an unclean stop before the snapshot completed";
    batch.Put(meta::SnapshotKey(r.id), r.Encode());
    tree_->Put(r);
    STRATA_LOG(kWarning, "snapshot ", r.id, ": ", r.state_message);
  }
  return catalog_->Write(batch);
}

absl::Status RegionImpl::ReopenResumableDirectSnapshots() {
  meta::WriteBatch batch;
  for (const std::string& id : resumable_) {
    meta::SnapshotRecord r = *tree_->Get(id);
    if (!volumes_.contains(r.volume_id)) {  // The builder is gone: the snapshot cannot finish.
      r.state = meta::SnapshotRecordState::kError;
      r.state_message = "the snapshot's builder volume is gone";
      batch.Put(meta::SnapshotKey(r.id), r.Encode());
      batch.Delete(meta::ResumableDirectKey(r.id));
      tree_->Put(r);
      continue;
    }
    auto pending = std::make_shared<PendingSnapshot>();
    pending->record = r;
    pending->direct = true;
    pending->frozen_yet = false;  // Frozen by CompleteDirectSnapshot, as before the stop.
    if (!r.parent_id.empty()) {
      STRATA_ASSIGN_OR_RETURN(pending->parent_ancestry, tree_->Ancestors(r.parent_id));
      const meta::SnapshotRecord parent = *tree_->Get(r.parent_id);
      pending->parent_seq = parent.seq;
      pending->compare_with_parent = parent.state == meta::SnapshotRecordState::kCompleted;
    }
    pending_[r.id] = pending;
    STRATA_LOG(kInfo, "region ", name_, ": direct snapshot ", r.id, " reopened");
  }
  resumable_.clear();
  return catalog_->Write(batch);
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
    while (!r.last_snapshot_id.empty()) {
      std::optional<meta::SnapshotRecord> s = tree_->Get(r.last_snapshot_id);
      if (s.has_value() && s->state != meta::SnapshotRecordState::kError) break;
      r.last_snapshot_id = s.has_value() ? s->parent_id : std::string();
    }
    if (r.last_snapshot_id != original) fixes.Put(meta::VolumeKey(r.id), r.Encode());
    STRATA_ASSIGN_OR_RETURN(std::unique_ptr<Head> head,
                            Head::Open(env_, HeadPath(r.id), r.size_bytes, false));
    known_heads.insert(r.id);
    const std::string id = r.id;
    const meta::EncryptionRecord encryption = r.encryption;
    const std::string owner = r.owner;
    auto volume =
        std::make_unique<VolumeImpl>(VolumeDeps{env_, catalog_.get(), chunks_.get(), tree_.get(),
                                                &domain_keys_, chunk_size_bytes_},
                                     std::move(r), std::move(head));
    if (encryption.encrypted()) {
      absl::Status unwrapped = LoadDomainKey(encryption, owner);
      absl::StatusOr<std::shared_ptr<const DomainKeys::Key>> key =
          domain_keys_.Get(encryption.domain);
      volume->set_encryption(key.ok() ? *key : nullptr, key.status());
      if (!unwrapped.ok()) {
        STRATA_LOG(kWarning, "region ", name_, ": volume ", id,
                   " stays closed: ", unwrapped.message());
      }
    }
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
    if (Head::ParseFileName(name, volume_id) && !known_heads.contains(volume_id)) {
      STRATA_RETURN_IF_ERROR(env_->DeleteFile(absl::StrCat(dir_, "/heads/", name)));
    }
  }
  return absl::OkStatus();
}

RegionImpl::~RegionImpl() {
  {
    absl::MutexLock lock(&queue_mu_);
    stopping_ = true;
    queue_cv_.SignalAll();
  }
  if (worker_.joinable()) worker_.join();
  // Finish what must not be left half done: pending snapshots and deletions. Hydration resumes
  // at the next open.
  absl::Status status = RunBackgroundWork();
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
  }
  volumes_.clear();
}

// ---------------------------------------------------------------------------------------------
// Volumes

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

VolumeInfo RegionImpl::ToInfo(VolumeImpl& volume) const {
  const meta::VolumeRecord r = volume.record();
  VolumeInfo info;
  info.id = r.id;
  info.size_bytes = r.size_bytes;
  info.snapshot_id = r.base_snapshot_id;
  info.create_time_micros = r.create_time_micros;
  info.tags = r.tags;
  info.hydrating = r.hydrating;
  info.owner = r.owner;
  info.volume_type = r.volume_type;
  info.iops = r.iops;
  info.throughput = r.throughput;
  info.attached_to = r.attached_to;
  info.device = r.device;
  info.attach_time_micros = r.attach_time_micros;
  info.encrypted = r.encryption.encrypted();
  info.kms_key_id = r.encryption.kms_key_arn;
  if (!r.base_snapshot_id.empty()) {
    const uint64_t total = volume.chunk_count();
    info.hydration_percent =
        total == 0 ? 100 : static_cast<int>(volume.owned_count() * 100 / total);
  }
  return info;
}

absl::StatusOr<VolumeImpl*> RegionImpl::FindVolumeLocked(const std::string& volume_id) {
  auto it = volumes_.find(volume_id);
  if (it == volumes_.end()) {
    return absl::NotFoundError(absl::StrCat("volume ", volume_id, " does not exist"));
  }
  return it->second.get();
}

absl::Status RegionImpl::PersistVolume(VolumeImpl& volume) {
  meta::WriteBatch batch;
  batch.Put(meta::VolumeKey(volume.id()), volume.record().Encode());
  return catalog_->Write(batch);
}

absl::StatusOr<VolumeInfo> RegionImpl::CreateVolume(const CreateVolumeRequest& request) {
  absl::MutexLock lock(&mu_);
  return CreateVolumeLocked(request, /*hidden=*/false);
}

absl::StatusOr<VolumeInfo> RegionImpl::CreateVolumeLocked(const CreateVolumeRequest& request,
                                                          bool hidden) {
  STRATA_RETURN_IF_ERROR(ValidateTags(request.tags));
  meta::VolumeRecord r;
  r.hidden = hidden;
  r.size_bytes = request.size_bytes;
  meta::EncryptionRecord base_encryption;
  if (!request.snapshot_id.empty()) {
    STRATA_ASSIGN_OR_RETURN(meta::SnapshotRecord snap, FindCompletedSnapshot(request.snapshot_id));
    base_encryption = snap.encryption;
    if (r.size_bytes == 0) r.size_bytes = snap.volume_size_bytes;
    if (r.size_bytes < snap.volume_size_bytes) {
      return absl::InvalidArgumentError(absl::StrCat("size ", r.size_bytes,
                                                     " is smaller than snapshot ", snap.id, " (",
                                                     snap.volume_size_bytes, " bytes)"));
    }
    r.base_snapshot_id = r.last_snapshot_id = snap.id;
    r.tree = snap.tree;
  } else {
    r.tree = (static_cast<uint64_t>(std::random_device{}()) << 32) ^ std::random_device{}() ^
             env_->NowMicros();
  }
  if (r.size_bytes == 0 || r.size_bytes % kVolumeSizeAlignBytes != 0 ||
      r.size_bytes > kMaxVolumeSizeBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("volume size ", r.size_bytes, " must be a non-zero multiple of ",
                     kVolumeSizeAlignBytes, " bytes, at most ", kMaxVolumeSizeBytes));
  }
  STRATA_ASSIGN_OR_RETURN(r.encryption, ChooseEncryption(request, base_encryption));
  r.id = NewId("vol");
  r.create_time_micros = env_->NowMicros();
  r.tags = request.tags;
  r.owner = request.owner;
  r.volume_type = request.volume_type.empty() ? "gp3" : request.volume_type;
  r.iops = request.iops;
  r.throughput = request.throughput;
  STRATA_ASSIGN_OR_RETURN(std::unique_ptr<Head> head,
                          Head::Open(env_, HeadPath(r.id), r.size_bytes, true));
  meta::WriteBatch batch;
  batch.Put(meta::VolumeKey(r.id), r.Encode());
  if (absl::Status s = catalog_->Write(batch); !s.ok()) {
    head.reset();
    (void)Head::Delete(env_, HeadPath(r.id));
    return s;
  }
  const std::string id = r.id;
  const meta::EncryptionRecord encryption = r.encryption;
  const bool new_domain =
      !r.last_snapshot_id.empty() && encryption.domain != base_encryption.domain;
  auto volume =
      std::make_unique<VolumeImpl>(VolumeDeps{env_, catalog_.get(), chunks_.get(), tree_.get(),
                                              &domain_keys_, chunk_size_bytes_},
                                   std::move(r), std::move(head));
  if (encryption.encrypted()) {
    absl::StatusOr<std::shared_ptr<const DomainKeys::Key>> key =
        domain_keys_.Get(encryption.domain);
    volume->set_encryption(key.ok() ? *key : nullptr, key.status());
  }
  // Another domain than its snapshot's: its first snapshot must hold every chunk in the new
  // domain (nothing of the old key or of plaintext may stay in its lineage's new data).
  if (new_domain) volume->MarkAllChanged();
  VolumeImpl* raw = volume.get();
  volumes_[id] = std::move(volume);
  return ToInfo(*raw);
}

absl::StatusOr<Volume*> RegionImpl::GetVolume(const std::string& volume_id) {
  absl::MutexLock lock(&mu_);
  STRATA_ASSIGN_OR_RETURN(VolumeImpl * volume, FindVolumeLocked(volume_id));
  return volume;
}

namespace {

class Pin final : public Region::VolumePin {
 public:
  explicit Pin(VolumeImpl& volume) : volume_(volume) { volume_.pins().fetch_add(1); }
  ~Pin() override { volume_.pins().fetch_sub(1); }
  Volume& volume() override { return volume_; }

 private:
  VolumeImpl& volume_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Region::VolumePin>> RegionImpl::PinVolume(
    const std::string& volume_id) {
  absl::MutexLock lock(&mu_);
  STRATA_ASSIGN_OR_RETURN(VolumeImpl * volume, FindVolumeLocked(volume_id));
  return std::make_unique<Pin>(*volume);
}

absl::StatusOr<VolumeInfo> RegionImpl::DescribeVolume(const std::string& volume_id) {
  absl::MutexLock lock(&mu_);
  STRATA_ASSIGN_OR_RETURN(VolumeImpl * volume, FindVolumeLocked(volume_id));
  return ToInfo(*volume);
}

absl::StatusOr<std::vector<VolumeInfo>> RegionImpl::ListVolumes() {
  absl::MutexLock lock(&mu_);
  std::vector<VolumeInfo> out;
  for (const auto& [id, volume] : volumes_) {
    if (!volume->record().hidden) out.push_back(ToInfo(*volume));
  }
  return out;
}

absl::Status RegionImpl::GrowVolume(const std::string& volume_id, uint64_t new_size_bytes) {
  if (new_size_bytes % kVolumeSizeAlignBytes != 0 || new_size_bytes > kMaxVolumeSizeBytes) {
    return absl::InvalidArgumentError(absl::StrCat("volume size ", new_size_bytes,
                                                   " must be a multiple of ", kVolumeSizeAlignBytes,
                                                   ", at most ", kMaxVolumeSizeBytes));
  }
  absl::MutexLock lock(&mu_);
  STRATA_ASSIGN_OR_RETURN(VolumeImpl * volume, FindVolumeLocked(volume_id));
  if (new_size_bytes == volume->size_bytes()) return absl::OkStatus();
  STRATA_RETURN_IF_ERROR(volume->Grow(new_size_bytes));
  return PersistVolume(*volume);
}

absl::Status RegionImpl::DeleteVolume(const std::string& volume_id) {
  absl::MutexLock lock(&mu_);
  return DeleteVolumeLocked(volume_id);
}

absl::Status RegionImpl::DeleteVolumeLocked(const std::string& volume_id) {
  STRATA_ASSIGN_OR_RETURN(VolumeImpl * volume, FindVolumeLocked(volume_id));
  if (volume->HasPending()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "volume ", volume_id, " has a pending snapshot; delete it once the snapshot completes"));
  }
  const meta::VolumeRecord record = volume->record();
  if (const int pins = volume->pins().load(); pins > 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("volume ", volume_id, " is open by ", pins,
                     " client connection(s); disconnect them first"));
  }
  if (!record.attached_to.empty()) {
    return absl::FailedPreconditionError(absl::StrCat("volume ", volume_id, " is attached to ",
                                                      record.attached_to, "; detach it first"));
  }
  meta::WriteBatch batch;
  batch.Delete(meta::VolumeKey(volume_id));
  for (const std::string& prefix : {meta::OwnedPrefix(volume_id), meta::DirtyPrefix(volume_id)}) {
    STRATA_RETURN_IF_ERROR(
        catalog_->Scan(prefix, "", [&](absl::string_view key, absl::string_view) {
          batch.Delete(std::string(key));
          return true;
        }));
  }
  // The record goes first: a crash before the head is deleted leaves an orphan head, which the
  // next open deletes, never a volume without its head.
  STRATA_RETURN_IF_ERROR(catalog_->Write(batch));
  volumes_.erase(volume_id);
  if (absl::Status s = Head::Delete(env_, HeadPath(volume_id)); !s.ok()) {
    STRATA_LOG(kWarning, "volume ", volume_id, ": head not deleted yet: ", s.ToString());
  }
  if (!record.last_snapshot_id.empty()) {
    Enqueue({Task::Kind::kPrune, record.last_snapshot_id, nullptr, 0});
  }
  return absl::OkStatus();
}

absl::Status RegionImpl::TagVolume(const std::string& volume_id,
                                   const std::map<std::string, std::string>& set,
                                   const std::vector<std::string>& remove) {
  absl::MutexLock lock(&mu_);
  STRATA_ASSIGN_OR_RETURN(VolumeImpl * volume, FindVolumeLocked(volume_id));
  meta::VolumeRecord r = volume->record();
  ApplyTags(r.tags, set, remove);
  STRATA_RETURN_IF_ERROR(ValidateTags(r.tags));
  meta::WriteBatch batch;
  batch.Put(meta::VolumeKey(volume_id), r.Encode());
  STRATA_RETURN_IF_ERROR(catalog_->Write(batch));
  volume->set_record_fields(r.tags, r.hydrating, r.hydrate_bytes_per_second);
  return absl::OkStatus();
}

absl::Status RegionImpl::StartHydration(const std::string& volume_id, uint64_t bytes_per_second) {
  absl::MutexLock lock(&mu_);
  STRATA_ASSIGN_OR_RETURN(VolumeImpl * volume, FindVolumeLocked(volume_id));
  meta::VolumeRecord r = volume->record();
  if (r.base_snapshot_id.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("volume ", volume_id, " was not created from a snapshot"));
  }
  const bool already = r.hydrating;
  volume->set_record_fields(r.tags, true, bytes_per_second);
  STRATA_RETURN_IF_ERROR(PersistVolume(*volume));
  if (!already) Enqueue({Task::Kind::kHydrate, volume_id, nullptr, 0});
  return absl::OkStatus();
}

absl::Status RegionImpl::SetVolumeType(const std::string& volume_id, const std::string& volume_type,
                                       uint64_t iops, uint64_t throughput) {
  absl::MutexLock lock(&mu_);
  STRATA_ASSIGN_OR_RETURN(VolumeImpl * volume, FindVolumeLocked(volume_id));
  volume->set_type(volume_type, iops, throughput);
  return PersistVolume(*volume);
}

absl::Status RegionImpl::SetSnapshotPermissions(const std::string& snapshot_id,
                                                const std::vector<std::string>& shared_with) {
  absl::MutexLock lock(&mu_);
  STRATA_ASSIGN_OR_RETURN(meta::SnapshotRecord r, FindSnapshot(snapshot_id));
  r.shared_with = shared_with;
  if (auto it = pending_.find(snapshot_id); it != pending_.end()) {
    it->second->record.shared_with = shared_with;
  }
  meta::WriteBatch batch;
  batch.Put(meta::SnapshotKey(r.id), r.Encode());
  STRATA_RETURN_IF_ERROR(catalog_->Write(batch));
  tree_->Put(r);
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// Snapshots

absl::StatusOr<meta::SnapshotRecord> RegionImpl::FindSnapshot(
    const std::string& snapshot_id) const {
  std::optional<meta::SnapshotRecord> r = tree_->Get(snapshot_id);
  if (!r.has_value() || r->deleted) {
    return absl::NotFoundError(absl::StrCat("snapshot ", snapshot_id, " does not exist"));
  }
  return *r;
}

absl::StatusOr<meta::SnapshotRecord> RegionImpl::FindCompletedSnapshot(
    const std::string& snapshot_id) const {
  STRATA_ASSIGN_OR_RETURN(meta::SnapshotRecord r, FindSnapshot(snapshot_id));
  if (r.state != meta::SnapshotRecordState::kCompleted) {
    return absl::FailedPreconditionError(absl::StrCat(
        "snapshot ", snapshot_id, " is ", SnapshotStateName(ToState(r.state)), ", not completed"));
  }
  return r;
}

SnapshotInfo RegionImpl::ToInfo(const meta::SnapshotRecord& r) const {
  SnapshotInfo info;
  info.id = r.id;
  info.volume_id = r.volume_id;
  info.parent_id = r.parent_id;
  info.state = ToState(r.state);
  info.state_message = r.state_message;
  info.volume_size_bytes = r.volume_size_bytes;
  info.incremental_bytes = r.incremental_bytes;
  info.changed_chunk_count = r.changed_chunk_count;
  info.start_time_micros = r.start_time_micros;
  info.description = r.description;
  info.tags = r.tags;
  info.owner = r.owner;
  info.shared_with = r.shared_with;
  info.encrypted = r.encryption.encrypted();
  info.kms_key_id = r.encryption.kms_key_arn;
  info.progress_percent = r.state == meta::SnapshotRecordState::kCompleted ? 100 : 0;
  if (auto it = pending_.find(r.id); it != pending_.end()) {
    const uint64_t total = it->second->frozen_count.load();
    const uint64_t done = it->second->ingested_count.load();
    info.progress_percent =
        total == 0 ? 0 : static_cast<int>(std::min<uint64_t>(99, done * 100 / total));
    if (it->second->direct && !it->second->frozen_yet) {
      info.progress_percent = it->second->writer_percent.load();
    }
  }
  return info;
}

absl::StatusOr<std::shared_ptr<PendingSnapshot>> RegionImpl::NewPending(
    VolumeImpl& volume, const CreateSnapshotRequest& request, uint64_t seq) {
  STRATA_RETURN_IF_ERROR(ValidateTags(request.tags));
  if (request.description.size() > 255) {
    return absl::InvalidArgumentError("a description is at most 255 characters");
  }
  const meta::VolumeRecord vr = volume.record();
  auto pending = std::make_shared<PendingSnapshot>();
  meta::SnapshotRecord& r = pending->record;
  r.id = NewId("snap");
  r.seq = seq;
  r.volume_id = vr.id;
  r.tree = vr.tree;
  r.parent_id = vr.last_snapshot_id;
  r.volume_size_bytes = vr.size_bytes;
  r.start_time_micros = env_->NowMicros();
  r.description = request.description;
  r.tags = request.tags;
  r.owner = request.owner;
  r.encryption = vr.encryption;  // A snapshot is encrypted as its volume, with its data key.
  if (!r.parent_id.empty()) {
    STRATA_ASSIGN_OR_RETURN(pending->parent_ancestry, tree_->Ancestors(r.parent_id));
    const meta::SnapshotRecord parent = *tree_->Get(r.parent_id);
    pending->parent_seq = parent.seq;
    pending->compare_with_parent = parent.state == meta::SnapshotRecordState::kCompleted;
  }
  return pending;
}

absl::StatusOr<SnapshotInfo> RegionImpl::CreateSnapshot(const CreateSnapshotRequest& request) {
  STRATA_ASSIGN_OR_RETURN(std::vector<SnapshotInfo> infos, CreateSnapshots({request}));
  return infos.front();
}

absl::StatusOr<std::vector<SnapshotInfo>> RegionImpl::CreateSnapshots(
    const std::vector<CreateSnapshotRequest>& requests) {
  if (requests.empty()) return absl::InvalidArgumentError("no volumes to snapshot");
  absl::MutexLock lock(&mu_);
  // Ordered by volume id: the gates are taken in this order, so two calls cannot deadlock.
  std::map<std::string, std::pair<VolumeImpl*, std::shared_ptr<PendingSnapshot>>> plan;
  for (size_t i = 0; i < requests.size(); ++i) {
    STRATA_ASSIGN_OR_RETURN(VolumeImpl * volume, FindVolumeLocked(requests[i].volume_id));
    if (plan.contains(volume->id())) {
      return absl::InvalidArgumentError(absl::StrCat("volume ", volume->id(), " is listed twice"));
    }
    STRATA_ASSIGN_OR_RETURN(std::shared_ptr<PendingSnapshot> pending,
                            NewPending(*volume, requests[i], next_seq_ + i));
    plan[volume->id()] = {volume, std::move(pending)};
  }
  // The point in time: every volume's writes are paused together for the O(1) swaps.
  for (auto& [id, entry] : plan) entry.first->LockGate();
  for (auto& [id, entry] : plan) entry.first->FreezeLocked(entry.second);
  for (auto it = plan.rbegin(); it != plan.rend(); ++it) it->second.first->UnlockGate();
  meta::WriteBatch batch;
  for (auto& [id, entry] : plan) {
    batch.Put(meta::SnapshotKey(entry.second->record.id), entry.second->record.Encode());
    batch.Put(meta::VolumeKey(id), entry.first->record().Encode());
  }
  PutNextSeq(batch, next_seq_ + requests.size());
  if (absl::Status s = catalog_->Write(batch); !s.ok()) {
    for (auto& [id, entry] : plan) entry.first->Unfreeze(entry.second);
    return s;
  }
  next_seq_ += requests.size();
  std::vector<SnapshotInfo> infos;
  for (const CreateSnapshotRequest& request : requests) {
    const std::shared_ptr<PendingSnapshot>& pending = plan[request.volume_id].second;
    tree_->Put(pending->record);
    pending_[pending->record.id] = pending;
    Enqueue({Task::Kind::kIngest, pending->record.id, pending, 0});
    infos.push_back(ToInfo(pending->record));
  }
  return infos;
}

absl::StatusOr<SnapshotInfo> RegionImpl::CopySnapshot(const std::string& source_snapshot_id,
                                                      const CreateSnapshotRequest& request) {
  STRATA_RETURN_IF_ERROR(ValidateTags(request.tags));
  if (request.description.size() > 255) {
    return absl::InvalidArgumentError("a description is at most 255 characters");
  }
  absl::MutexLock lock(&mu_);
  STRATA_ASSIGN_OR_RETURN(meta::SnapshotRecord source, FindCompletedSnapshot(source_snapshot_id));
  if (request.encrypted || !request.kms_key_id.empty() || source.encryption.encrypted()) {
    // Which key the copy gets decides whether it can share the source's data.
    CreateVolumeRequest as_volume;
    as_volume.snapshot_id = source.id;
    as_volume.owner = request.owner;
    as_volume.encrypted = true;
    as_volume.kms_key_id = request.kms_key_id;
    bool same_key = false;
    if (source.encryption.encrypted()) {
      const std::string key_ref =
          request.kms_key_id.empty() ? source.encryption.kms_key_arn : request.kms_key_id;
      STRATA_ASSIGN_OR_RETURN(KmsKeyInfo key, kms_->DescribeKey(request.owner, key_ref));
      same_key = key.arn == source.encryption.kms_key_arn;
    }
    if (!same_key) return CopyIntoNewDomainLocked(as_volume, request);
    // Same key: the copy shares the source's data key, if the caller may use it.
    STRATA_RETURN_IF_ERROR(ChooseEncryption(as_volume, source.encryption).status());
  }
  meta::SnapshotRecord r;
  r.encryption = source.encryption;
  r.id = NewId("snap");
  r.seq = next_seq_;
  r.volume_id = source.volume_id;
  r.tree = source.tree;
  r.parent_id = source.id;
  r.state = meta::SnapshotRecordState::kCompleted;
  r.volume_size_bytes = source.volume_size_bytes;
  r.start_time_micros = env_->NowMicros();
  r.description = request.description;
  r.tags = request.tags;
  r.owner = request.owner;
  meta::WriteBatch batch;
  batch.Put(meta::SnapshotKey(r.id), r.Encode());
  PutNextSeq(batch, next_seq_ + 1);
  STRATA_RETURN_IF_ERROR(catalog_->Write(batch));
  ++next_seq_;
  tree_->Put(r);
  return ToInfo(r);
}

absl::StatusOr<std::pair<std::shared_ptr<PendingSnapshot>, VolumeImpl*>>
RegionImpl::StartBuilderSnapshotLocked(const CreateVolumeRequest& builder_request,
                                       const CreateSnapshotRequest& request) {
  STRATA_ASSIGN_OR_RETURN(VolumeInfo builder, CreateVolumeLocked(builder_request, /*hidden=*/true));
  VolumeImpl* volume = volumes_.at(builder.id).get();
  absl::StatusOr<std::shared_ptr<PendingSnapshot>> pending =
      NewPending(*volume, request, next_seq_);
  if (!pending.ok()) {
    (void)DeleteVolumeLocked(builder.id);
    return pending.status();
  }
  (*pending)->direct = true;  // The builder goes when the snapshot completes or fails.
  meta::WriteBatch batch;
  batch.Put(meta::SnapshotKey((*pending)->record.id), (*pending)->record.Encode());
  PutNextSeq(batch, next_seq_ + 1);
  if (absl::Status s = catalog_->Write(batch); !s.ok()) {
    (void)DeleteVolumeLocked(builder.id);
    return s;
  }
  ++next_seq_;
  tree_->Put((*pending)->record);
  pending_[(*pending)->record.id] = *pending;
  return std::make_pair(*pending, volume);
}

absl::StatusOr<SnapshotInfo> RegionImpl::CopyIntoNewDomainLocked(
    const CreateVolumeRequest& as_volume, const CreateSnapshotRequest& request) {
  // A hidden builder volume of the source in the new domain, frozen at once: its ingest reads
  // every chunk through the source and stores it under the new data key.
  STRATA_ASSIGN_OR_RETURN(auto started, StartBuilderSnapshotLocked(as_volume, request));
  auto& [pending, volume] = started;
  volume->Freeze(pending);
  Enqueue({Task::Kind::kIngest, pending->record.id, pending, 0});
  return ToInfo(pending->record);
}

absl::StatusOr<Region::DirectSnapshot> RegionImpl::StartDirectSnapshot(
    uint64_t size_bytes, const std::string& parent_snapshot_id,
    const CreateSnapshotRequest& request) {
  absl::MutexLock lock(&mu_);
  CreateVolumeRequest builder_request;
  builder_request.size_bytes = size_bytes;
  builder_request.snapshot_id = parent_snapshot_id;
  builder_request.owner = request.owner;
  builder_request.encrypted = request.encrypted;
  builder_request.kms_key_id = request.kms_key_id;
  STRATA_ASSIGN_OR_RETURN(auto started, StartBuilderSnapshotLocked(builder_request, request));
  auto& [pending, volume] = started;
  pending->frozen_yet = false;  // Frozen by CompleteDirectSnapshot, once the blocks are in.
  if (request.survive_restart) {
    meta::WriteBatch batch;
    batch.Put(meta::ResumableDirectKey(pending->record.id), "");
    STRATA_RETURN_IF_ERROR(catalog_->Write(batch));
  }
  return DirectSnapshot{ToInfo(pending->record), volume->id()};
}

absl::StatusOr<std::shared_ptr<PendingSnapshot>> RegionImpl::FindOpenDirectLocked(
    const std::string& snapshot_id) {
  auto it = pending_.find(snapshot_id);
  if (it == pending_.end() || !it->second->direct || it->second->frozen_yet) {
    return absl::FailedPreconditionError(
        absl::StrCat("snapshot ", snapshot_id, " is not a direct snapshot in progress"));
  }
  return it->second;
}

absl::Status RegionImpl::CompleteDirectSnapshot(const std::string& snapshot_id) {
  absl::MutexLock lock(&mu_);
  STRATA_ASSIGN_OR_RETURN(std::shared_ptr<PendingSnapshot> pending,
                          FindOpenDirectLocked(snapshot_id));
  STRATA_ASSIGN_OR_RETURN(VolumeImpl * builder, FindVolumeLocked(pending->record.volume_id));
  STRATA_RETURN_IF_ERROR(builder->Flush());
  builder->Freeze(pending);
  pending->frozen_yet = true;
  Enqueue({Task::Kind::kIngest, snapshot_id, pending, 0});
  return absl::OkStatus();
}

void RegionImpl::ReportDirectSnapshotProgress(const std::string& snapshot_id, int percent) {
  absl::MutexLock lock(&mu_);
  auto it = pending_.find(snapshot_id);
  if (it != pending_.end() && it->second->direct) {
    it->second->writer_percent.store(std::clamp(percent, 0, 99));
  }
}

absl::Status RegionImpl::AbortDirectSnapshot(const std::string& snapshot_id,
                                             const std::string& reason) {
  absl::MutexLock lock(&mu_);
  STRATA_ASSIGN_OR_RETURN(std::shared_ptr<PendingSnapshot> pending,
                          FindOpenDirectLocked(snapshot_id));
  pending_.erase(snapshot_id);
  meta::SnapshotRecord r = *tree_->Get(snapshot_id);
  r.state = meta::SnapshotRecordState::kError;
  r.state_message = reason;
  meta::WriteBatch batch;
  batch.Put(meta::SnapshotKey(r.id), r.Encode());
  STRATA_RETURN_IF_ERROR(catalog_->Write(batch));
  tree_->Put(r);
  return DeleteVolumeLocked(pending->record.volume_id);
}

absl::Status RegionImpl::AttachVolume(const std::string& volume_id, const std::string& instance_id,
                                      const std::string& device) {
  auto hex = [](absl::string_view s) {
    return s.find_first_not_of("0123456789abcdef") == absl::string_view::npos;
  };
  if (!(instance_id.size() == 19 || instance_id.size() == 10) || instance_id.substr(0, 2) != "i-" ||
      !hex(absl::string_view(instance_id).substr(2))) {
    return absl::InvalidArgumentError(
        absl::StrCat("instance id \"", instance_id, "\" must be i- and 17 (or 8) hex digits"));
  }
  if (device.size() < 6 || device.size() > 32 || device.substr(0, 5) != "/dev/" ||
      device.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789/") != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("device \"", device, "\" must look like /dev/sdf"));
  }
  absl::MutexLock lock(&mu_);
  STRATA_ASSIGN_OR_RETURN(VolumeImpl * volume, FindVolumeLocked(volume_id));
  const meta::VolumeRecord r = volume->record();
  if (r.encryption.encrypted()) {
    // As on AWS: a disabled (or pending deletion) key stops new attachments; attached volumes
    // keep working until detached.
    STRATA_RETURN_IF_ERROR(kms_->CheckUsable(r.owner, r.encryption.kms_key_arn));
  }
  if (!r.attached_to.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "volume ", volume_id, " is already attached to ", r.attached_to, "; detach it first"));
  }
  for (const auto& [id, other] : volumes_) {
    const meta::VolumeRecord o = other->record();
    if (o.attached_to == instance_id && o.device == device) {
      return absl::AlreadyExistsError(
          absl::StrCat("device ", device, " of ", instance_id, " is taken by ", id));
    }
  }
  volume->set_attachment(instance_id, device, env_->NowMicros());
  if (absl::Status s = PersistVolume(*volume); !s.ok()) {
    volume->set_attachment("", "", 0);
    return s;
  }
  return absl::OkStatus();
}

absl::Status RegionImpl::DetachVolume(const std::string& volume_id,
                                      const std::string& instance_id) {
  absl::MutexLock lock(&mu_);
  STRATA_ASSIGN_OR_RETURN(VolumeImpl * volume, FindVolumeLocked(volume_id));
  const meta::VolumeRecord r = volume->record();
  if (r.attached_to.empty()) {
    return absl::FailedPreconditionError(absl::StrCat("volume ", volume_id, " is not attached"));
  }
  if (!instance_id.empty() && instance_id != r.attached_to) {
    return absl::FailedPreconditionError(absl::StrCat("volume ", volume_id, " is attached to ",
                                                      r.attached_to, ", not ", instance_id));
  }
  STRATA_RETURN_IF_ERROR(volume->Flush());
  volume->set_attachment("", "", 0);
  if (absl::Status s = PersistVolume(*volume); !s.ok()) {
    volume->set_attachment(r.attached_to, r.device, r.attach_time_micros);
    return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<SnapshotInfo> RegionImpl::DescribeSnapshot(const std::string& snapshot_id) {
  STRATA_ASSIGN_OR_RETURN(meta::SnapshotRecord r, FindSnapshot(snapshot_id));
  absl::MutexLock lock(&mu_);
  return ToInfo(r);
}

absl::StatusOr<std::vector<SnapshotInfo>> RegionImpl::ListSnapshots() {
  std::vector<meta::SnapshotRecord> all = tree_->All();
  std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return a.seq < b.seq; });
  absl::MutexLock lock(&mu_);
  std::vector<SnapshotInfo> out;
  for (const meta::SnapshotRecord& r : all) {
    if (!r.deleted) out.push_back(ToInfo(r));
  }
  return out;
}

absl::StatusOr<SnapshotInfo> RegionImpl::WaitForSnapshot(const std::string& snapshot_id,
                                                         uint64_t timeout_ms) {
  const absl::Time deadline = absl::Now() + absl::Milliseconds(timeout_ms);
  for (;;) {
    STRATA_ASSIGN_OR_RETURN(SnapshotInfo info, DescribeSnapshot(snapshot_id));
    if (info.state != SnapshotState::kPending || absl::Now() >= deadline) return info;
    absl::SleepFor(absl::Milliseconds(2));
  }
}

absl::Status RegionImpl::CommitWithSnapshots(const std::vector<std::string>& snapshot_ids,
                                             const meta::WriteBatch& batch) {
  absl::MutexLock lock(&mu_);
  for (const std::string& id : snapshot_ids) {
    STRATA_ASSIGN_OR_RETURN(meta::SnapshotRecord r, FindSnapshot(id));
    if (r.state == meta::SnapshotRecordState::kError) {
      return absl::FailedPreconditionError(
          absl::StrCat("snapshot ", id, " failed: ", r.state_message));
    }
  }
  return catalog_->Write(batch);
}

absl::Status RegionImpl::DeleteSnapshot(const std::string& snapshot_id) {
  absl::MutexLock lock(&mu_);
  STRATA_ASSIGN_OR_RETURN(meta::SnapshotRecord r, FindSnapshot(snapshot_id));
  std::string image_id;
  STRATA_RETURN_IF_ERROR(
      catalog_->Scan(meta::ImageRefPrefix(snapshot_id), "", [&](absl::string_view key, auto) {
        image_id = std::string(key.substr(meta::ImageRefPrefix(snapshot_id).size()));
        return false;
      }));
  if (!image_id.empty()) {
    return WithAwsErrorCode(
        absl::FailedPreconditionError(
            absl::StrCat("the snapshot ", snapshot_id, " is currently in use by ", image_id)),
        "InvalidSnapshot.InUse");
  }
  meta::WriteBatch batch;
  if (r.state == meta::SnapshotRecordState::kPending) {
    return absl::FailedPreconditionError(
        absl::StrCat("snapshot ", snapshot_id, " is pending; delete it once it completes"));
  }
  if (r.state == meta::SnapshotRecordState::kError) {  // Holds no data.
    batch.Delete(meta::SnapshotKey(r.id));
    STRATA_RETURN_IF_ERROR(catalog_->Write(batch));
    tree_->Erase(r.id);
    return absl::OkStatus();
  }
  r.deleted = true;
  batch.Put(meta::SnapshotKey(r.id), r.Encode());
  STRATA_RETURN_IF_ERROR(catalog_->Write(batch));
  tree_->Put(r);
  Enqueue({Task::Kind::kPrune, r.id, nullptr, 0});
  return absl::OkStatus();
}

absl::Status RegionImpl::TagSnapshot(const std::string& snapshot_id,
                                     const std::map<std::string, std::string>& set,
                                     const std::vector<std::string>& remove) {
  absl::MutexLock lock(&mu_);
  STRATA_ASSIGN_OR_RETURN(meta::SnapshotRecord r, FindSnapshot(snapshot_id));
  ApplyTags(r.tags, set, remove);
  STRATA_RETURN_IF_ERROR(ValidateTags(r.tags));
  if (auto it = pending_.find(snapshot_id); it != pending_.end()) {
    // The completion writes the pending copy of the record: keep it current.
    it->second->record.tags = r.tags;
  }
  meta::WriteBatch batch;
  batch.Put(meta::SnapshotKey(r.id), r.Encode());
  STRATA_RETURN_IF_ERROR(catalog_->Write(batch));
  tree_->Put(r);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Snapshot>> RegionImpl::OpenSnapshot(const std::string& snapshot_id) {
  STRATA_ASSIGN_OR_RETURN(meta::SnapshotRecord r, FindCompletedSnapshot(snapshot_id));
  STRATA_ASSIGN_OR_RETURN(SnapshotTree::Ancestry ancestry, tree_->Ancestors(snapshot_id));
  return std::make_unique<SnapshotReader>(*tree_, *chunks_, domain_keys_, std::move(r),
                                          std::move(ancestry), chunk_size_bytes_);
}

// ---------------------------------------------------------------------------------------------
// Changed blocks (EBS direct APIs)

absl::StatusOr<std::string> RegionImpl::BlockToken(const meta::SnapshotRecord& record,
                                                   const SnapshotTree::Ancestry& ancestry,
                                                   uint64_t block_index) const {
  const uint64_t start = block_index * kApiBlockBytes;
  const uint64_t end = std::min(start + kApiBlockBytes, record.volume_size_bytes);
  std::string material;
  bool any = false;
  const uint64_t first = start / chunk_size_bytes_;
  const uint64_t count = (end - 1) / chunk_size_bytes_ - first + 1;
  STRATA_ASSIGN_OR_RETURN(std::vector<ChunkEntry> entries,
                          tree_->ResolveRange(record.tree, ancestry, first, count));
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

absl::StatusOr<BlockListing> RegionImpl::ListSnapshotBlocks(const std::string& snapshot_id,
                                                            const std::string& next_token,
                                                            uint64_t max_results) {
  STRATA_RETURN_IF_ERROR(CheckMaxResults(max_results));
  STRATA_ASSIGN_OR_RETURN(const uint64_t start_block, ParseToken(next_token));
  STRATA_ASSIGN_OR_RETURN(meta::SnapshotRecord r, FindCompletedSnapshot(snapshot_id));
  STRATA_ASSIGN_OR_RETURN(SnapshotTree::Ancestry ancestry, tree_->Ancestors(snapshot_id));
  BlockListing listing;
  listing.volume_size_bytes = r.volume_size_bytes;
  // Visit the tree's resolve index in chunk order; the first visible entry per chunk wins.
  std::set<uint64_t> blocks;
  uint64_t last_chunk = UINT64_MAX;
  bool more = false;
  const uint64_t first_chunk = start_block * kApiBlockBytes / chunk_size_bytes_;
  STRATA_RETURN_IF_ERROR(catalog_->Scan(
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

absl::StatusOr<BlockListing> RegionImpl::ListChangedBlocks(const std::string& first_snapshot_id,
                                                           const std::string& second_snapshot_id,
                                                           const std::string& next_token,
                                                           uint64_t max_results) {
  STRATA_RETURN_IF_ERROR(CheckMaxResults(max_results));
  STRATA_ASSIGN_OR_RETURN(const uint64_t start_block, ParseToken(next_token));
  STRATA_ASSIGN_OR_RETURN(meta::SnapshotRecord a, FindCompletedSnapshot(first_snapshot_id));
  STRATA_ASSIGN_OR_RETURN(meta::SnapshotRecord b, FindCompletedSnapshot(second_snapshot_id));
  if (a.tree != b.tree) {
    return absl::InvalidArgumentError(
        absl::StrCat("snapshots ", a.id, " and ", b.id, " are not of the same lineage"));
  }
  STRATA_ASSIGN_OR_RETURN(SnapshotTree::Ancestry anc_a, tree_->Ancestors(a.id));
  STRATA_ASSIGN_OR_RETURN(SnapshotTree::Ancestry anc_b, tree_->Ancestors(b.id));
  // Only the deltas on the two paths below the common ancestor can differ.
  std::set<uint64_t> path_seqs;
  for (uint64_t s : *anc_a)
    if (!anc_b->contains(s)) path_seqs.insert(s);
  for (uint64_t s : *anc_b)
    if (!anc_a->contains(s)) path_seqs.insert(s);
  std::set<uint64_t> candidates;
  for (uint64_t seq : path_seqs) {
    STRATA_RETURN_IF_ERROR(catalog_->Scan(meta::ManifestPrefix(seq), "",
                                          [&](absl::string_view key, absl::string_view) {
                                            candidates.insert(meta::ManifestKeyChunk(key));
                                            return true;
                                          }));
  }
  const uint64_t size = std::max(a.volume_size_bytes, b.volume_size_bytes);
  std::set<uint64_t> changed_blocks;
  for (uint64_t c : candidates) {
    STRATA_ASSIGN_OR_RETURN(ChunkEntry ea, tree_->Resolve(a.tree, a.seq, anc_a, c));
    STRATA_ASSIGN_OR_RETURN(ChunkEntry eb, tree_->Resolve(b.tree, b.seq, anc_b, c));
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

absl::StatusOr<ChunkListing> RegionImpl::ListChunks(const std::string& snapshot_id,
                                                    const std::string& base_snapshot_id) {
  STRATA_ASSIGN_OR_RETURN(meta::SnapshotRecord r, FindCompletedSnapshot(snapshot_id));
  STRATA_ASSIGN_OR_RETURN(SnapshotTree::Ancestry ancestry, tree_->Ancestors(snapshot_id));
  ChunkListing listing;
  listing.chunk_size_bytes = chunk_size_bytes_;
  listing.volume_size_bytes = r.volume_size_bytes;
  listing.lineage = absl::StrCat(name_, "/", r.tree);
  const uint64_t chunk_count = (r.volume_size_bytes + chunk_size_bytes_ - 1) / chunk_size_bytes_;
  if (base_snapshot_id.empty()) {
    // The resolve index in chunk order; the first entry visible from the snapshot wins.
    uint64_t last_chunk = UINT64_MAX;
    STRATA_RETURN_IF_ERROR(catalog_->Scan(
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
  STRATA_ASSIGN_OR_RETURN(meta::SnapshotRecord base, FindCompletedSnapshot(base_snapshot_id));
  if (base.tree != r.tree) {
    return absl::InvalidArgumentError(
        absl::StrCat("snapshots ", base.id, " and ", r.id, " are not of the same lineage"));
  }
  STRATA_ASSIGN_OR_RETURN(SnapshotTree::Ancestry base_ancestry, tree_->Ancestors(base.id));
  // Only the deltas on the two paths below the common ancestor can differ.
  std::set<uint64_t> candidates;
  for (const auto& [one, other] :
       {std::pair(ancestry, base_ancestry), std::pair(base_ancestry, ancestry)}) {
    for (uint64_t seq : *one) {
      if (other->contains(seq)) continue;
      STRATA_RETURN_IF_ERROR(catalog_->Scan(meta::ManifestPrefix(seq), "",
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
    STRATA_ASSIGN_OR_RETURN(ChunkEntry now, tree_->Resolve(r.tree, r.seq, ancestry, c));
    ChunkEntry before;
    if (c < base_chunks) {
      STRATA_ASSIGN_OR_RETURN(before, tree_->Resolve(base.tree, base.seq, base_ancestry, c));
    }
    if (now == before) continue;
    listing.chunks.push_back({c, !now.has_value()});
  }
  return listing;
}

absl::StatusOr<std::string> RegionImpl::GetSnapshotBlock(const std::string& snapshot_id,
                                                         uint64_t block_index) {
  STRATA_ASSIGN_OR_RETURN(std::unique_ptr<Snapshot> snapshot, OpenSnapshot(snapshot_id));
  const uint64_t offset = block_index * kApiBlockBytes;
  if (block_index >= snapshot->size_bytes() / kApiBlockBytes + 1 ||
      offset >= snapshot->size_bytes()) {
    return absl::InvalidArgumentError(
        absl::StrCat("block ", block_index, " is past the end of ", snapshot_id));
  }
  std::string out(std::min<uint64_t>(kApiBlockBytes, snapshot->size_bytes() - offset), '\0');
  STRATA_RETURN_IF_ERROR(
      snapshot->Read(offset, std::as_writable_bytes(std::span(out.data(), out.size()))));
  return out;
}

// ---------------------------------------------------------------------------------------------
// Store maintenance

absl::StatusOr<uint64_t> RegionImpl::CollectGarbage() { return chunks_->CollectGarbage(); }

absl::StatusOr<StoreStats> RegionImpl::GetStats() {
  STRATA_ASSIGN_OR_RETURN(chunk::ChunkStoreStats s, chunks_->GetStats());
  return StoreStats{s.chunk_count, s.referenced_chunk_count, s.stored_bytes, s.segment_file_bytes,
                    s.segment_count};
}

// ---------------------------------------------------------------------------------------------
// Background work

void RegionImpl::Enqueue(Task task) {
  absl::MutexLock lock(&queue_mu_);
  queue_.push_back(std::move(task));
  queue_cv_.Signal();
}

absl::Status RegionImpl::RunBackgroundWork() {
  // Bounded: each task either finishes or is a hydration that advances by at least one chunk.
  for (;;) {
    std::optional<Task> task;
    {
      absl::MutexLock lock(&queue_mu_);
      if (queue_.empty()) return absl::OkStatus();
      task = std::move(queue_.front());
      queue_.pop_front();
    }
    bool stopping = false;
    {
      absl::MutexLock lock(&queue_mu_);
      stopping = stopping_;
    }
    // At a stop, hydration is left for the next open (its state is persisted).
    if (stopping && task->kind == Task::Kind::kHydrate) continue;
    if (std::optional<Task> next = RunTask(std::move(*task)); next.has_value()) {
      next->not_before_micros = 0;
      Enqueue(std::move(*next));
    }
  }
}

void RegionImpl::WorkerLoop() {
  absl::MutexLock lock(&queue_mu_);
  while (!stopping_) {
    const uint64_t now = env_->NowMicros();
    auto ready = std::find_if(queue_.begin(), queue_.end(),
                              [&](const Task& t) { return t.not_before_micros <= now; });
    if (ready == queue_.end()) {
      uint64_t wait_micros = 1000000;
      for (const Task& t : queue_) wait_micros = std::min(wait_micros, t.not_before_micros - now);
      queue_cv_.WaitWithTimeout(&queue_mu_, absl::Microseconds(wait_micros));
      continue;
    }
    Task task = std::move(*ready);
    queue_.erase(ready);
    queue_mu_.Unlock();
    std::optional<Task> next = RunTask(std::move(task));
    queue_mu_.Lock();
    if (next.has_value()) queue_.push_back(std::move(*next));
  }
}

std::optional<RegionImpl::Task> RegionImpl::RunTask(Task task) {
  switch (task.kind) {
    case Task::Kind::kIngest:
      RunIngest(task.pending);
      return std::nullopt;
    case Task::Kind::kPrune: {
      absl::MutexLock lock(&mu_);
      if (absl::Status s = Prune(task.id); !s.ok()) {
        STRATA_LOG(kError, "snapshot ", task.id,
                   ": deletion failed, retried at next open: ", s.ToString());
      }
      return std::nullopt;
    }
    case Task::Kind::kHydrate:
      return HydrateStep(task.id);
  }
  return std::nullopt;
}

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
  for (std::optional<uint64_t> c = pending->frozen->NextSet(0); c.has_value();
       c = pending->frozen->NextSet(*c + 1)) {
    volume->IngestChunk(*pending, *c);
    absl::MutexLock lock(&pending->mu);
    if (!pending->error.ok()) break;
  }
  absl::MutexLock lock(&mu_);
  absl::Status error;
  {
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
    Enqueue({Task::Kind::kPrune, parent->id, nullptr, 0});
  }
}

absl::Status RegionImpl::CompleteSnapshot(VolumeImpl& volume, PendingSnapshot& pending) {
  absl::MutexLock plock(&pending.mu);
  meta::SnapshotRecord r = *tree_->Get(pending.record.id);  // Current tags.
  meta::WriteBatch batch;
  uint64_t data_chunks = 0;
  for (const auto& [c, entry] : pending.entries) {
    const std::string value = EncodeEntry(entry);
    batch.Put(meta::ManifestKey(r.seq, c), value);
    batch.Put(meta::ResolveKey(r.tree, c, r.seq), value);
    data_chunks += entry.has_value() ? 1 : 0;
  }
  r.state = meta::SnapshotRecordState::kCompleted;
  if (pending.direct) r.volume_id = kDirectSnapshotVolumeId;  // As EBS shows it.
  r.changed_chunk_count = pending.entries.size();
  r.incremental_bytes = data_chunks * chunk_size_bytes_;
  batch.Put(meta::SnapshotKey(r.id), r.Encode());
  STRATA_RETURN_IF_ERROR(chunks_->Commit(std::move(batch), pending.pinned, {}));
  pending.pinned.clear();
  tree_->Put(r);
  pending_.erase(r.id);
  volume.FinishPending(&pending);
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
    // The records stay pending in the catalog; the next open turns them into errors.
    STRATA_LOG(kError, "snapshot ", pending->record.id, ": recording the failure: ", s.ToString());
  }
  for (const meta::SnapshotRecord& r : failed_records) tree_->Put(r);
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
  meta::WriteBatch batch;
  std::vector<chunk::ChunkKey> drops;
  absl::Status bad;
  STRATA_RETURN_IF_ERROR(catalog_->Scan(meta::ManifestPrefix(r.seq), "",
                                        [&](absl::string_view key, absl::string_view value) {
                                          const uint64_t c = meta::ManifestKeyChunk(key);
                                          absl::StatusOr<ChunkEntry> entry = DecodeEntry(value);
                                          if (!entry.ok()) {
                                            bad = entry.status();
                                            return false;
                                          }
                                          if (entry->has_value()) drops.push_back(**entry);
                                          batch.Delete(std::string(key));
                                          batch.Delete(meta::ResolveKey(r.tree, c, r.seq));
                                          return true;
                                        }));
  STRATA_RETURN_IF_ERROR(bad);
  batch.Delete(meta::SnapshotKey(r.id));
  STRATA_RETURN_IF_ERROR(chunks_->Commit(std::move(batch), {}, drops));
  tree_->Erase(r.id);
  return absl::OkStatus();
}

absl::Status RegionImpl::MergeIntoChild(const meta::SnapshotRecord& r, meta::SnapshotRecord child) {
  // The child inherits every entry it does not override; overridden ones are dropped. Cost:
  // O(this snapshot's manifest entries).
  meta::WriteBatch batch;
  std::vector<chunk::ChunkKey> drops;
  absl::Status bad;
  std::vector<std::pair<uint64_t, std::string>> entries;
  STRATA_RETURN_IF_ERROR(catalog_->Scan(
      meta::ManifestPrefix(r.seq), "", [&](absl::string_view key, absl::string_view value) {
        entries.emplace_back(meta::ManifestKeyChunk(key), std::string(value));
        return true;
      }));
  for (const auto& [c, value] : entries) {
    STRATA_ASSIGN_OR_RETURN(ChunkEntry entry, DecodeEntry(value));
    batch.Delete(meta::ManifestKey(r.seq, c));
    batch.Delete(meta::ResolveKey(r.tree, c, r.seq));
    STRATA_ASSIGN_OR_RETURN(std::optional<std::string> overridden,
                            catalog_->Get(meta::ManifestKey(child.seq, c)));
    if (overridden.has_value()) {
      if (entry.has_value()) drops.push_back(*entry);
      continue;
    }
    batch.Put(meta::ManifestKey(child.seq, c), value);
    batch.Put(meta::ResolveKey(child.tree, c, child.seq), value);
    ++child.changed_chunk_count;
    if (entry.has_value()) child.incremental_bytes += chunk_size_bytes_;
  }
  STRATA_RETURN_IF_ERROR(bad);
  child.parent_id = r.parent_id;
  batch.Put(meta::SnapshotKey(child.id), child.Encode());
  batch.Delete(meta::SnapshotKey(r.id));
  STRATA_RETURN_IF_ERROR(chunks_->Commit(std::move(batch), {}, drops));
  tree_->Put(child);
  tree_->Erase(r.id);
  return absl::OkStatus();
}

std::optional<RegionImpl::Task> RegionImpl::HydrateStep(const std::string& volume_id) {
  // mu_ is held across this slice's I/O so the volume cannot be deleted under it; slices are
  // small (kHydrateUnlimitedSliceChunks at most).
  absl::MutexLock lock(&mu_);
  absl::StatusOr<VolumeImpl*> found = FindVolumeLocked(volume_id);
  if (!found.ok() || !(*found)->record().hydrating) return std::nullopt;
  VolumeImpl* volume = *found;
  const uint64_t rate = volume->record().hydrate_bytes_per_second;
  const uint64_t slice_chunks = std::min<uint64_t>(
      kHydrateUnlimitedSliceChunks,
      rate == 0 ? kHydrateUnlimitedSliceChunks
                : std::max<uint64_t>(1, rate * kHydrateSliceMicros / 1000000 / chunk_size_bytes_));
  absl::StatusOr<uint64_t> copied = volume->Hydrate(slice_chunks);
  absl::Status status = copied.status();
  if (status.ok()) status = volume->Flush();
  if (!status.ok()) {
    STRATA_LOG(kError, "volume ", volume_id, ": hydration paused: ", status.ToString());
    return Task{Task::Kind::kHydrate, volume_id, nullptr,
                env_->NowMicros() + 10 * kHydrateSliceMicros};
  }
  if (*copied > 0) {
    return Task{Task::Kind::kHydrate, volume_id, nullptr, env_->NowMicros() + kHydrateSliceMicros};
  }
  const meta::VolumeRecord r = volume->record();
  volume->set_record_fields(r.tags, false, r.hydrate_bytes_per_second);
  if (absl::Status s = PersistVolume(*volume); !s.ok()) {
    STRATA_LOG(kError, "volume ", volume_id, ": recording hydration: ", s.ToString());
  }
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// Encryption

namespace {

EncryptionContext DataKeyContext(uint32_t domain) {
  return {{"strata:domain", absl::StrCat(domain)}};
}

}  // namespace

absl::Status RegionImpl::LoadDomainKey(const meta::EncryptionRecord& encryption,
                                       const std::string& owner) {
  if (domain_keys_.Get(encryption.domain).ok()) return absl::OkStatus();
  absl::StatusOr<Decrypted> key =
      kms_->Decrypt(owner, encryption.wrapped_key, DataKeyContext(encryption.domain), "");
  if (!key.ok()) {
    domain_keys_.SetUnavailable(encryption.domain, key.status());
    return key.status();
  }
  return domain_keys_.Add(encryption.domain, key->plaintext);
}

absl::StatusOr<meta::EncryptionRecord> RegionImpl::ChooseEncryption(
    const CreateVolumeRequest& request, const meta::EncryptionRecord& base) {
  STRATA_ASSIGN_OR_RETURN(EbsEncryptionDefaults defaults, GetEbsEncryptionDefaults(request.owner));
  const bool encrypted = request.encrypted || base.encrypted() || defaults.enabled;
  if (!encrypted) {
    if (!request.kms_key_id.empty()) {
      return absl::InvalidArgumentError("a KMS key is given only with encryption on");
    }
    return meta::EncryptionRecord();
  }
  std::string key_ref = request.kms_key_id;
  if (key_ref.empty()) {
    key_ref = base.encrypted()              ? base.kms_key_arn
              : defaults.kms_key_id.empty() ? "alias/aws/ebs"
                                            : defaults.kms_key_id;
  }
  STRATA_ASSIGN_OR_RETURN(KmsKeyInfo key, kms_->DescribeKey(request.owner, key_ref));
  if (base.encrypted() && key.arn == base.kms_key_arn) {
    // The snapshot's key: the same data key and dedup domain (its lineage), if the owner may
    // use that key (its own, or shared by policy or grant).
    STRATA_ASSIGN_OR_RETURN(Decrypted data_key, kms_->Decrypt(request.owner, base.wrapped_key,
                                                              DataKeyContext(base.domain), ""));
    STRATA_RETURN_IF_ERROR(domain_keys_.Add(base.domain, data_key.plaintext));
    return base;
  }
  // A new data key: a new dedup domain.
  meta::EncryptionRecord out;
  {
    const uint32_t domain = next_domain_;
    std::string value;
    util::PutFixed32(value, domain + 1);
    meta::WriteBatch batch;
    batch.Put(meta::NextDomainKey(), value);
    STRATA_RETURN_IF_ERROR(catalog_->Write(batch));
    next_domain_ = domain + 1;
    out.domain = domain;
  }
  for (int attempt = 0;; ++attempt) {
    STRATA_ASSIGN_OR_RETURN(DataKey data_key, kms_->GenerateDataKey(request.owner, key.arn, 64,
                                                                    DataKeyContext(out.domain)));
    absl::Status added = domain_keys_.Add(out.domain, data_key.plaintext);
    if (!added.ok() && attempt == 0) continue;  // Equal XTS halves: astronomically rare; retry.
    STRATA_RETURN_IF_ERROR(added);
    out.kms_key_arn = data_key.key_arn;
    out.wrapped_key = std::move(data_key.ciphertext);
    return out;
  }
}

absl::StatusOr<EbsEncryptionDefaults> RegionImpl::GetEbsEncryptionDefaults(
    const std::string& account) {
  STRATA_ASSIGN_OR_RETURN(std::optional<std::string> value,
                          catalog_->Get(meta::EbsDefaultsKey(account)));
  EbsEncryptionDefaults out;
  if (!value.has_value()) return out;
  util::Decoder in(*value);
  if (!in.GetBool(out.enabled) || !in.GetLengthPrefixed(out.kms_key_id) || !in.done()) {
    return absl::DataLossError(absl::StrCat("corrupt EBS encryption defaults of ", account));
  }
  return out;
}

absl::Status RegionImpl::SetEbsEncryptionDefaults(const std::string& account,
                                                  const EbsEncryptionDefaults& defaults) {
  if (!defaults.kms_key_id.empty()) {
    STRATA_RETURN_IF_ERROR(kms_->DescribeKey(account, defaults.kms_key_id).status());
  }
  std::string value;
  value.push_back(defaults.enabled ? 1 : 0);
  util::PutLengthPrefixed(value, defaults.kms_key_id);
  meta::WriteBatch batch;
  batch.Put(meta::EbsDefaultsKey(account), value);
  return catalog_->Write(batch);
}

}  // namespace strata::region
