// The exports of a Store (strata/export.h): attached volumes and completed snapshots, who may
// open them, and a bound on the connections of each.
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "strata/export.h"
#include "strata/store.h"

namespace strata {
namespace {

// Thread-safe; `store` must outlive it and its exports.
class StoreExportCatalog final : public ExportCatalog {
 public:
  explicit StoreExportCatalog(Store& store) : store_(store) {}
  absl::StatusOr<std::unique_ptr<Export>> Open(const std::string& name,
                                               const std::optional<std::string>& account) override;
  std::vector<std::string> List(const std::optional<std::string>& account) override;
  std::optional<std::string> AccountFor(const std::string& identity) override;
  std::optional<std::string> NbdKeyFor(const std::string& identity) override;

  // Takes one of an export's connection slots and one of the account's (none for the
  // operator); on failure, neither, and the error says which cap was reached.
  absl::Status Acquire(const std::string& name, const std::optional<std::string>& account);
  void Release(const std::string& name, const std::optional<std::string>& account);

 private:
  absl::StatusOr<std::unique_ptr<Export>> OpenVolume(Region& region, const VolumeInfo& info,
                                                     const std::optional<std::string>& account);

  Store& store_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, int> connections_ ABSL_GUARDED_BY(mu_);  // Per export.
  absl::flat_hash_map<std::string, int> account_connections_ ABSL_GUARDED_BY(mu_);
};

// Holds one of the catalog's connection slots for an export (and its account's).
class Slot {
 public:
  Slot(StoreExportCatalog& catalog, std::string name, std::optional<std::string> account)
      : catalog_(catalog), name_(std::move(name)), account_(std::move(account)) {}
  ~Slot() { catalog_.Release(name_, account_); }
  Slot(const Slot&) = delete;
  Slot& operator=(const Slot&) = delete;

 private:
  StoreExportCatalog& catalog_;
  const std::string name_;
  const std::optional<std::string> account_;
};

class VolumeExport final : public Export {
 public:
  VolumeExport(std::unique_ptr<Slot> slot, Region& region, std::unique_ptr<Region::VolumePin> pin,
               std::string name, std::string description)
      : slot_(std::move(slot)),
        region_(region),
        pin_(std::move(pin)),
        volume_(pin_->volume()),
        name_(std::move(name)),
        description_(std::move(description)) {}

  const std::string& name() const override { return name_; }
  std::string description() const override { return description_; }
  uint64_t size_bytes() const override { return volume_.size_bytes(); }
  bool read_only() const override { return false; }
  bool is_volume() const override { return true; }
  IoLimiter* limiter() override { return &volume_.limiter(); }
  bool reads_wait_on_network() const override { return volume_.reads_wait_on_network(); }
  absl::Status Read(uint64_t offset, std::span<std::byte> out) override {
    return volume_.Read(offset, out);
  }
  absl::Status Write(uint64_t offset, std::span<const std::byte> data, bool fua) override {
    return volume_.Write(offset, data, fua);
  }
  void SubmitRead(uint64_t offset, std::span<std::byte> out, IoRing& ring, VolumeIo& io) override {
    volume_.SubmitRead(offset, out, ring, io);
  }
  void SubmitWrite(uint64_t offset, std::span<std::byte> data, bool fua, IoRing& ring,
                   VolumeIo& io) override {
    volume_.SubmitWrite(offset, data, fua, ring, io);
  }
  bool SplicesWrite(uint64_t offset, uint64_t length) override {
    return volume_.SplicesWrite(offset, length);
  }
  std::optional<absl::Status> WriteSpliced(uint64_t offset, int pipe_fd, uint64_t length) override {
    return volume_.WriteSpliced(offset, pipe_fd, length);
  }
  absl::Status Trim(uint64_t offset, uint64_t length) override {
    return volume_.Trim(offset, length);
  }
  absl::Status WriteZeroes(uint64_t offset, uint64_t length, bool fua) override {
    return volume_.WriteZeroes(offset, length, fua);
  }
  absl::Status Flush() override { return volume_.Flush(); }
  absl::Status Resize(uint64_t new_size_bytes) override {
    if (new_size_bytes == volume_.size_bytes()) return absl::OkStatus();
    if (new_size_bytes < volume_.size_bytes()) {
      return absl::PermissionDeniedError(absl::StrCat(name_, ": volumes never shrink (",
                                                      volume_.size_bytes(), " to ", new_size_bytes,
                                                      " bytes)"));
    }
    return region_.GrowVolume(name_, new_size_bytes);
  }
  absl::StatusOr<std::vector<AllocationExtent>> Allocation(uint64_t offset, uint64_t length,
                                                           size_t max_extents) override {
    return volume_.Allocation(offset, length, max_extents);
  }
  absl::StatusOr<std::vector<ChangeExtent>> Changes(uint64_t offset, uint64_t length,
                                                    size_t max_extents) override {
    return volume_.Changes(offset, length, max_extents);
  }

 private:
  std::unique_ptr<Slot> slot_;
  Region& region_;
  std::unique_ptr<Region::VolumePin> pin_;
  Volume& volume_;
  const std::string name_;
  const std::string description_;
};

class SnapshotExport final : public Export {
 public:
  SnapshotExport(std::unique_ptr<Slot> slot, std::unique_ptr<Snapshot> snapshot,
                 std::string description)
      : slot_(std::move(slot)),
        snapshot_(std::move(snapshot)),
        description_(std::move(description)) {}

  const std::string& name() const override { return snapshot_->id(); }
  std::string description() const override { return description_; }
  uint64_t size_bytes() const override { return snapshot_->size_bytes(); }
  bool read_only() const override { return true; }
  bool is_volume() const override { return false; }
  absl::Status Read(uint64_t offset, std::span<std::byte> out) override {
    return snapshot_->Read(offset, out);
  }
  bool reads_wait_on_network() const override { return snapshot_->reads_wait_on_network(); }
  absl::Status Write(uint64_t, std::span<const std::byte>, bool) override { return ReadOnly(); }
  absl::Status Trim(uint64_t, uint64_t) override { return ReadOnly(); }
  absl::Status WriteZeroes(uint64_t, uint64_t, bool) override { return ReadOnly(); }
  absl::Status Flush() override { return absl::OkStatus(); }
  absl::Status Resize(uint64_t) override { return ReadOnly(); }
  absl::StatusOr<std::vector<AllocationExtent>> Allocation(uint64_t, uint64_t length,
                                                           size_t) override {
    return std::vector<AllocationExtent>{{length, false}};  // All data, as the spec allows.
  }
  absl::StatusOr<std::vector<ChangeExtent>> Changes(uint64_t, uint64_t, size_t) override {
    return absl::UnimplementedError("snapshots have no changes of their own");
  }

 private:
  static absl::Status ReadOnly() {
    return absl::PermissionDeniedError("snapshot exports are read-only");
  }
  std::unique_ptr<Slot> slot_;
  std::unique_ptr<Snapshot> snapshot_;
  const std::string description_;
};

bool MayUse(const std::optional<std::string>& account, const std::string& owner,
            const std::vector<std::string>& shared_with = {}) {
  if (!account.has_value()) return true;
  return owner == *account || std::ranges::count(shared_with, *account) > 0 ||
         std::ranges::count(shared_with, "all") > 0;
}

absl::Status NoSuchExport(const std::string& name) {
  return absl::NotFoundError(absl::StrCat("no export named \"", name,
                                          "\": attach the volume first (AttachVolume), or name a "
                                          "completed snapshot you may use"));
}

absl::Status StoreExportCatalog::Acquire(const std::string& name,
                                         const std::optional<std::string>& account) {
  absl::MutexLock lock(&mu_);
  if (auto it = connections_.find(name);
      it != connections_.end() && it->second >= kMaxConnectionsPerExport) {
    return absl::ResourceExhaustedError(
        absl::StrCat(name, " has ", kMaxConnectionsPerExport, " connections already"));
  }
  if (account.has_value()) {
    if (auto it = account_connections_.find(*account);
        it != account_connections_.end() && it->second >= kMaxConnectionsPerAccount) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "account ", *account, " has ", kMaxConnectionsPerAccount, " NBD connections already"));
    }
    ++account_connections_[*account];
  }
  ++connections_[name];
  return absl::OkStatus();
}

void StoreExportCatalog::Release(const std::string& name,
                                 const std::optional<std::string>& account) {
  absl::MutexLock lock(&mu_);
  auto release = [](absl::flat_hash_map<std::string, int>& counts, const std::string& key) {
    auto it = counts.find(key);
    if (it != counts.end() && --it->second == 0) counts.erase(it);
  };
  release(connections_, name);
  if (account.has_value()) release(account_connections_, *account);
}

absl::StatusOr<std::unique_ptr<Export>> StoreExportCatalog::Open(
    const std::string& name, const std::optional<std::string>& account) {
  const bool snapshot = absl::StartsWith(name, "snap-");
  if (!snapshot && !absl::StartsWith(name, "vol-")) return NoSuchExport(name);
  for (const std::string& region_name : store_.ListRegions()) {
    absl::StatusOr<Region*> region = store_.GetRegion(region_name);
    if (!region.ok()) continue;
    if (snapshot) {
      absl::StatusOr<SnapshotInfo> info = (*region)->DescribeSnapshot(name);
      if (!info.ok()) continue;
      if (!MayUse(account, info->owner, info->shared_with)) return NoSuchExport(name);
      if (info->state != SnapshotState::kCompleted) {
        return absl::FailedPreconditionError(
            absl::StrCat(name, " is ", SnapshotStateName(info->state), ", not completed"));
      }
      absl::StatusOr<std::unique_ptr<Snapshot>> reader = (*region)->OpenSnapshot(name);
      if (!reader.ok()) return reader.status();
      if (absl::Status s = Acquire(name, account); !s.ok()) return s;
      return std::make_unique<SnapshotExport>(
          std::make_unique<Slot>(*this, name, account), std::move(*reader),
          absl::StrCat("snapshot of ", info->volume_id, " (read-only)"));
    }
    absl::StatusOr<VolumeInfo> info = (*region)->DescribeVolume(name);
    if (!info.ok()) continue;
    if (info->attached_to.empty() || !MayUse(account, info->owner)) return NoSuchExport(name);
    return OpenVolume(**region, *info, account);
  }
  return NoSuchExport(name);
}

absl::StatusOr<std::unique_ptr<Export>> StoreExportCatalog::OpenVolume(
    Region& region, const VolumeInfo& info, const std::optional<std::string>& account) {
  if (absl::Status s = Acquire(info.id, account); !s.ok()) return s;
  auto slot = std::make_unique<Slot>(*this, info.id, account);
  absl::StatusOr<std::unique_ptr<Region::VolumePin>> pin = region.PinVolume(info.id);
  if (!pin.ok()) return pin.status();
  return std::make_unique<VolumeExport>(
      std::move(slot), region, std::move(*pin), info.id,
      absl::StrCat("volume attached to ", info.attached_to, " as ", info.device));
}

std::vector<std::string> StoreExportCatalog::List(const std::optional<std::string>& account) {
  std::vector<std::string> names;
  for (const std::string& region_name : store_.ListRegions()) {
    absl::StatusOr<Region*> region = store_.GetRegion(region_name);
    if (!region.ok()) continue;
    absl::StatusOr<std::vector<VolumeInfo>> volumes = (*region)->ListVolumes();
    if (!volumes.ok()) continue;
    for (const VolumeInfo& v : *volumes) {
      if (!v.elsewhere && !v.attached_to.empty() && MayUse(account, v.owner)) {
        names.push_back(v.id);
      }
    }
  }
  return names;
}

std::optional<std::string> StoreExportCatalog::AccountFor(const std::string& identity) {
  for (const Account& a : store_.ListAccounts()) {
    if (a.id == identity || a.name == identity || a.access_key_id == identity) return a.id;
  }
  return std::nullopt;
}

std::optional<std::string> StoreExportCatalog::NbdKeyFor(const std::string& identity) {
  absl::StatusOr<Account> account = store_.FindAccessKey(identity);
  if (!account.ok()) return std::nullopt;
  return DeriveNbdKey(account->secret_access_key);
}

}  // namespace

std::string DeriveNbdKey(const std::string& secret_access_key) {
  static constexpr char kLabel[] = "strata nbd tls-psk v1";
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  HMAC(EVP_sha256(), secret_access_key.data(), static_cast<int>(secret_access_key.size()),
       reinterpret_cast<const unsigned char*>(kLabel), sizeof(kLabel) - 1, out, &length);
  return std::string(reinterpret_cast<const char*>(out), length);
}

std::unique_ptr<ExportCatalog> NewStoreExportCatalog(Store& store) {
  return std::make_unique<StoreExportCatalog>(store);
}

}  // namespace strata
