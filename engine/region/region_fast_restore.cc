// RegionImpl: fast snapshot restore (docs/data-protection.md). One record per snapshot and
// account ("f/" keys, JSON): when it was enabled (and disabled), and its credit bucket. Its state
// is derived from the clock and StoreOptions::fast_restore; a volume made from the snapshot while
// it is enabled spends a credit and is hydrated before CreateVolume returns.
#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "region/region_impl.h"
#include "region/snapshot_records.h"
#include "strata/aws_error.h"
#include "util/log.h"
#include "util/status_macros.h"

namespace strata::region {
namespace {

using nlohmann::json;

// What the catalog keeps of one (snapshot, account).
struct FastRestoreRecord {
  uint64_t enabling_micros = 0;
  uint64_t disabling_micros = 0;  // 0: not disabled.
  uint64_t size_bytes = 0;        // The snapshot's, for the model's times and the bucket.
  double credits = 0;             // As of credits_micros.
  uint64_t credits_micros = 0;
};

std::string Encode(const FastRestoreRecord& r) {
  return json{{"enabling", r.enabling_micros},
              {"disabling", r.disabling_micros},
              {"size", r.size_bytes},
              {"credits", r.credits},
              {"credits_at", r.credits_micros}}
      .dump();
}

absl::StatusOr<FastRestoreRecord> Decode(absl::string_view bytes) {
  json j = json::parse(bytes, nullptr, /*allow_exceptions=*/false);
  try {
    if (j.is_discarded()) throw json::other_error::create(0, "not JSON", nullptr);
    return FastRestoreRecord{j.at("enabling"), j.at("disabling"), j.at("size"), j.at("credits"),
                             j.at("credits_at")};
  } catch (const json::exception& e) {
    return absl::DataLossError(absl::StrCat("catalog: corrupt fast restore record: ", e.what()));
  }
}

uint32_t BucketSize(uint64_t size_bytes) {
  const uint64_t gib = std::max<uint64_t>(1, (size_bytes + (uint64_t{1} << 30) - 1) >> 30);
  return static_cast<uint32_t>(std::max<uint64_t>(1, std::min<uint64_t>(10, 1024 / gib)));
}

}  // namespace

FastRestoreInfo RegionImpl::ToFastRestoreInfo(const std::string& key,
                                              const std::string& value) const {
  FastRestoreInfo info;
  const absl::string_view rest = absl::string_view(key).substr(meta::kFastRestorePrefix.size());
  const size_t slash = rest.find('/');
  info.snapshot_id = std::string(rest.substr(0, slash));
  info.account = slash == absl::string_view::npos ? "" : std::string(rest.substr(slash + 1));
  absl::StatusOr<FastRestoreRecord> r = Decode(value);
  if (!r.ok()) {
    info.state = "disabled";
    return info;
  }
  const StoreOptions::FastRestoreTiming& t = options_.fast_restore;
  const uint64_t now = env_->NowMicros();
  info.enabling_micros = r->enabling_micros;
  info.optimizing_micros = r->enabling_micros + t.enabling_ms * 1000;
  info.enabled_micros =
      info.optimizing_micros + (t.optimize_bytes_per_second == 0
                                    ? 0
                                    : r->size_bytes * 1'000'000 / t.optimize_bytes_per_second);
  info.bucket_size = BucketSize(r->size_bytes);
  if (r->disabling_micros != 0) {
    info.disabling_micros = r->disabling_micros;
    info.disabled_micros = r->disabling_micros + t.disabling_ms * 1000;
    info.state = now < info.disabled_micros ? "disabling" : "disabled";
    if (info.enabled_micros > info.disabling_micros) info.enabled_micros = 0;
    if (info.optimizing_micros > info.disabling_micros) info.optimizing_micros = 0;
    return info;
  }
  info.state = now < info.optimizing_micros ? "enabling"
               : now < info.enabled_micros  ? "optimizing"
                                            : "enabled";
  // The bucket fills at its size per hour from its last spend (full when enabled).
  const double per_micro = info.bucket_size / (day_micros() / 24.0);
  const uint64_t since = std::max(r->credits_micros, info.enabled_micros);
  info.credits = std::min<double>(
      info.bucket_size,
      r->credits + (now > since ? static_cast<double>(now - since) * per_micro : 0));
  return info;
}

absl::StatusOr<FastRestoreInfo> RegionImpl::EnableFastSnapshotRestore(
    const std::string& account, const std::string& snapshot_id) {
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, EnterShared());
  absl::MutexLock lock(&mu_);
  STRATA_ASSIGN_OR_RETURN(meta::SnapshotRecord snap, FindCompletedSnapshot(*tree_, snapshot_id));
  const std::string key = meta::FastRestoreKey(snapshot_id, account);
  STRATA_ASSIGN_OR_RETURN(std::optional<std::string> old, catalog_->Get(key));
  if (old.has_value()) {
    FastRestoreInfo info = ToFastRestoreInfo(key, *old);
    if (info.state != "disabling" && info.state != "disabled") return info;  // Already on.
  }
  FastRestoreRecord r;
  r.enabling_micros = env_->NowMicros();
  r.size_bytes = snap.volume_size_bytes;
  r.credits = BucketSize(r.size_bytes);
  meta::WriteBatch batch;
  batch.Put(key, Encode(r));
  STRATA_RETURN_IF_ERROR(catalog_->Write(batch));
  return ToFastRestoreInfo(key, Encode(r));
}

absl::StatusOr<FastRestoreInfo> RegionImpl::DisableFastSnapshotRestore(
    const std::string& account, const std::string& snapshot_id) {
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, EnterShared());
  absl::MutexLock lock(&mu_);
  const std::string key = meta::FastRestoreKey(snapshot_id, account);
  STRATA_ASSIGN_OR_RETURN(std::optional<std::string> old, catalog_->Get(key));
  if (!old.has_value()) {
    return AwsError(absl::StatusCode::kNotFound, "InvalidSnapshot.NotFound",
                    absl::StrCat("fast snapshot restore was never enabled for ", snapshot_id));
  }
  STRATA_ASSIGN_OR_RETURN(FastRestoreRecord r, Decode(*old));
  if (r.disabling_micros == 0) {
    r.disabling_micros = env_->NowMicros();
    meta::WriteBatch batch;
    batch.Put(key, Encode(r));
    STRATA_RETURN_IF_ERROR(catalog_->Write(batch));
  }
  return ToFastRestoreInfo(key, Encode(r));
}

absl::StatusOr<std::vector<FastRestoreInfo>> RegionImpl::ListFastSnapshotRestores() {
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, EnterShared());
  std::vector<FastRestoreInfo> out;
  STRATA_RETURN_IF_ERROR(catalog_->Scan(
      meta::kFastRestorePrefix, "", [&](absl::string_view key, absl::string_view value) {
        out.push_back(ToFastRestoreInfo(std::string(key), std::string(value)));
        return true;
      }));
  return out;
}

absl::StatusOr<bool> RegionImpl::TakeFastRestoreCreditLocked(const std::string& snapshot_id,
                                                             const std::string& account) {
  if (account.empty()) return false;
  const std::string key = meta::FastRestoreKey(snapshot_id, account);
  STRATA_ASSIGN_OR_RETURN(std::optional<std::string> value, catalog_->Get(key));
  if (!value.has_value()) return false;
  const FastRestoreInfo info = ToFastRestoreInfo(key, *value);
  if (info.state != "enabled" || info.credits < 1) return false;
  STRATA_ASSIGN_OR_RETURN(FastRestoreRecord r, Decode(*value));
  r.credits = info.credits - 1;
  r.credits_micros = env_->NowMicros();
  meta::WriteBatch batch;
  batch.Put(key, Encode(r));
  STRATA_RETURN_IF_ERROR(catalog_->Write(batch));
  return true;
}

absl::Status RegionImpl::HydrateNowLocked(VolumeImpl& volume) {
  for (;;) {
    STRATA_ASSIGN_OR_RETURN(uint64_t copied, volume.Hydrate(256));
    if (copied == 0) break;
  }
  STRATA_RETURN_IF_ERROR(volume.Flush());
  const meta::VolumeRecord r = volume.record();
  volume.set_record_fields(r.tags, false, r.hydrate_bytes_per_second);
  volume.set_fast_restored(true);
  return PersistVolume(volume);
}

absl::Status RegionImpl::DropFastRestores(const std::string& snapshot_id, meta::WriteBatch& batch) {
  return catalog_->Scan(meta::FastRestorePrefix(snapshot_id), "",
                        [&](absl::string_view key, absl::string_view) {
                          batch.Delete(std::string(key));
                          return true;
                        });
}

}  // namespace strata::region
