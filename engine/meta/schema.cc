#include "meta/schema.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "util/coding.h"

namespace strata::meta {
namespace {

using util::PutBigEndian64;

// Version 2 appended owner and type fields; version 1 records still decode.
constexpr uint8_t kVolumeRecordVersion = 6;
constexpr uint8_t kSnapshotRecordVersion = 4;

void PutEncryption(std::string& out, const EncryptionRecord& e) {
  util::PutFixed32(out, e.domain);
  util::PutLengthPrefixed(out, e.kms_key_arn);
  util::PutLengthPrefixed(out, e.wrapped_key);
}
bool GetEncryption(util::Decoder& in, EncryptionRecord& e) {
  return in.GetFixed32(e.domain) && in.GetLengthPrefixed(e.kms_key_arn) &&
         in.GetLengthPrefixed(e.wrapped_key);
}

std::string IdLeafKey(absl::string_view prefix, absl::string_view id, uint64_t leaf) {
  std::string key = absl::StrCat(prefix, id, "/");
  PutBigEndian64(key, leaf);
  return key;
}

void PutTags(std::string& out, const std::map<std::string, std::string>& tags) {
  util::PutFixed32(out, static_cast<uint32_t>(tags.size()));
  for (const auto& [k, v] : tags) {
    util::PutLengthPrefixed(out, k);
    util::PutLengthPrefixed(out, v);
  }
}

bool GetTags(util::Decoder& in, std::map<std::string, std::string>& tags) {
  uint32_t n = 0;
  if (!in.GetFixed32(n)) return false;
  for (uint32_t i = 0; i < n; ++i) {
    std::string k, v;
    if (!in.GetLengthPrefixed(k) || !in.GetLengthPrefixed(v)) return false;
    tags[k] = v;
  }
  return true;
}

// Reads the version byte: 1 to `latest`.
bool GetVersion(util::Decoder& in, uint8_t latest, uint8_t& version) {
  std::string v;
  if (!in.GetBytes(1, v)) return false;
  version = static_cast<uint8_t>(v[0]);
  return version >= 1 && version <= latest;
}

}  // namespace

std::string FormatKey() { return "x/format"; }
std::string CleanKey() { return "x/clean"; }
std::string NextSeqKey() { return "x/next_seq"; }
std::string NextDomainKey() { return "x/next_domain"; }
std::string EbsDefaultsKey(absl::string_view account) { return absl::StrCat("e/", account); }
std::string ResumableDirectKey(absl::string_view snapshot_id) {
  return absl::StrCat("x/resumable/", snapshot_id);
}
std::string VolumeKey(absl::string_view volume_id) {
  return absl::StrCat(kVolumePrefix, volume_id);
}
std::string OwnedLeafKey(absl::string_view id, uint64_t leaf) { return IdLeafKey("o/", id, leaf); }
std::string OwnedPrefix(absl::string_view id) { return absl::StrCat("o/", id, "/"); }
std::string DirtyLeafKey(absl::string_view id, uint64_t leaf) { return IdLeafKey("d/", id, leaf); }
std::string DirtyPrefix(absl::string_view id) { return absl::StrCat("d/", id, "/"); }
std::string ImageKey(absl::string_view image_id) { return absl::StrCat(kImagePrefix, image_id); }
std::string ImageRefKey(absl::string_view snapshot_id, absl::string_view image_id) {
  return absl::StrCat(ImageRefPrefix(snapshot_id), image_id);
}
std::string ImageRefPrefix(absl::string_view snapshot_id) {
  return absl::StrCat("i/ref/", snapshot_id, "/");
}
std::string ImageSettingsKey(absl::string_view account) { return absl::StrCat("i/set/", account); }
std::string InstanceKey(absl::string_view instance_id) {
  return absl::StrCat(kInstancePrefix, instance_id);
}
std::string FastRestoreKey(absl::string_view snapshot_id, absl::string_view account) {
  return absl::StrCat(FastRestorePrefix(snapshot_id), account);
}
std::string FastRestorePrefix(absl::string_view snapshot_id) {
  return absl::StrCat(kFastRestorePrefix, snapshot_id, "/");
}
std::string RecycleRuleKey(absl::string_view rule_id) {
  return absl::StrCat(kRecycleRulePrefix, rule_id);
}
std::string ArchiveKey(absl::string_view snapshot_id) {
  return absl::StrCat(kArchivePrefix, snapshot_id);
}
std::string SnapshotKey(absl::string_view id) { return absl::StrCat(kSnapshotPrefix, id); }

std::string ManifestPrefix(uint64_t seq) {
  std::string key = "m/";
  PutBigEndian64(key, seq);
  return key;
}
std::string ManifestKey(uint64_t seq, uint64_t chunk_index) {
  std::string key = ManifestPrefix(seq);
  PutBigEndian64(key, chunk_index);
  return key;
}
std::string ResolveTreePrefix(uint64_t tree) {
  std::string key = "r/";
  PutBigEndian64(key, tree);
  return key;
}
std::string ResolvePrefix(uint64_t tree, uint64_t chunk_index) {
  std::string key = ResolveTreePrefix(tree);
  PutBigEndian64(key, chunk_index);
  return key;
}
std::string ResolveKey(uint64_t tree, uint64_t chunk_index, uint64_t seq) {
  std::string key = ResolvePrefix(tree, chunk_index);
  PutBigEndian64(key, ~seq);  // Newest first.
  return key;
}
uint64_t ManifestKeyChunk(absl::string_view key) {
  return util::DecodeBigEndian64(key.data() + 10);
}
uint64_t ResolveKeyChunk(absl::string_view key) { return util::DecodeBigEndian64(key.data() + 10); }
uint64_t ResolveKeySeq(absl::string_view key) { return ~util::DecodeBigEndian64(key.data() + 18); }
uint64_t LeafKeyIndex(absl::string_view key) {
  return util::DecodeBigEndian64(key.data() + key.size() - 8);
}

std::string VolumeRecord::Encode() const {
  std::string out(1, static_cast<char>(kVolumeRecordVersion));
  util::PutLengthPrefixed(out, id);
  util::PutFixed64(out, size_bytes);
  util::PutLengthPrefixed(out, base_snapshot_id);
  util::PutLengthPrefixed(out, last_snapshot_id);
  util::PutFixed64(out, tree);
  util::PutFixed64(out, create_time_micros);
  util::PutFixed64(out, hydrate_bytes_per_second);
  out.push_back(hydrating ? 1 : 0);
  PutTags(out, tags);
  util::PutLengthPrefixed(out, owner);
  util::PutLengthPrefixed(out, volume_type);
  util::PutFixed64(out, iops);
  util::PutFixed64(out, throughput);
  util::PutLengthPrefixed(out, attached_to);
  util::PutLengthPrefixed(out, device);
  util::PutFixed64(out, attach_time_micros);
  out.push_back(hidden ? 1 : 0);
  PutEncryption(out, encryption);
  util::PutFixed64(out, modification.start_time_micros);
  util::PutFixed64(out, modification.optimizing_time_micros);
  util::PutFixed64(out, modification.end_time_micros);
  util::PutFixed64(out, modification.original_size_bytes);
  util::PutLengthPrefixed(out, modification.original_type);
  util::PutFixed64(out, modification.original_iops);
  util::PutFixed64(out, modification.original_throughput);
  out.push_back(static_cast<char>(head));
  out.push_back(fast_restored ? 1 : 0);
  return out;
}

absl::StatusOr<VolumeRecord> VolumeRecord::Decode(absl::string_view bytes) {
  util::Decoder in(bytes);
  VolumeRecord r;
  uint8_t version = 0;
  bool rados_head = false;
  if (!GetVersion(in, kVolumeRecordVersion, version) || !in.GetLengthPrefixed(r.id) ||
      !in.GetFixed64(r.size_bytes) || !in.GetLengthPrefixed(r.base_snapshot_id) ||
      !in.GetLengthPrefixed(r.last_snapshot_id) || !in.GetFixed64(r.tree) ||
      !in.GetFixed64(r.create_time_micros) || !in.GetFixed64(r.hydrate_bytes_per_second) ||
      !in.GetBool(r.hydrating) || !GetTags(in, r.tags) ||
      (version >= 2 && (!in.GetLengthPrefixed(r.owner) || !in.GetLengthPrefixed(r.volume_type) ||
                        !in.GetFixed64(r.iops) || !in.GetFixed64(r.throughput) ||
                        !in.GetLengthPrefixed(r.attached_to) || !in.GetLengthPrefixed(r.device) ||
                        !in.GetFixed64(r.attach_time_micros) || !in.GetBool(r.hidden))) ||
      (version >= 3 && !GetEncryption(in, r.encryption)) ||
      (version >= 4 && (!in.GetFixed64(r.modification.start_time_micros) ||
                        !in.GetFixed64(r.modification.optimizing_time_micros) ||
                        !in.GetFixed64(r.modification.end_time_micros) ||
                        !in.GetFixed64(r.modification.original_size_bytes) ||
                        !in.GetLengthPrefixed(r.modification.original_type) ||
                        !in.GetFixed64(r.modification.original_iops) ||
                        !in.GetFixed64(r.modification.original_throughput))) ||
      (version >= 5 && !in.GetBool(rados_head)) || (version >= 6 && !in.GetBool(r.fast_restored)) ||
      !in.done()) {
    return absl::DataLossError("catalog: corrupt volume record");
  }
  r.head = rados_head ? HeadStore::kRados : HeadStore::kFiles;
  if (r.volume_type.empty()) r.volume_type = "gp3";
  return r;
}

std::string SnapshotRecord::Encode() const {
  std::string out(1, static_cast<char>(kSnapshotRecordVersion));
  util::PutLengthPrefixed(out, id);
  util::PutFixed64(out, seq);
  util::PutLengthPrefixed(out, volume_id);
  util::PutFixed64(out, tree);
  util::PutLengthPrefixed(out, parent_id);
  out.push_back(static_cast<char>(state));
  util::PutLengthPrefixed(out, state_message);
  util::PutFixed64(out, volume_size_bytes);
  util::PutFixed64(out, incremental_bytes);
  util::PutFixed64(out, changed_chunk_count);
  util::PutFixed64(out, start_time_micros);
  out.push_back(deleted ? 1 : 0);
  util::PutLengthPrefixed(out, description);
  PutTags(out, tags);
  util::PutLengthPrefixed(out, owner);
  util::PutFixed32(out, static_cast<uint32_t>(shared_with.size()));
  for (const std::string& account : shared_with) util::PutLengthPrefixed(out, account);
  PutEncryption(out, encryption);
  out.push_back(static_cast<char>(lock.mode));
  for (uint64_t v : {lock.created_micros, lock.duration_start_micros, lock.cool_off_until_micros,
                     lock.expires_micros}) {
    util::PutFixed64(out, v);
  }
  util::PutFixed32(out, lock.duration_days);
  util::PutFixed32(out, lock.cool_off_hours);
  util::PutFixed64(out, recycled_micros);
  util::PutFixed64(out, recycle_until_micros);
  return out;
}

absl::StatusOr<SnapshotRecord> SnapshotRecord::Decode(absl::string_view bytes) {
  util::Decoder in(bytes);
  SnapshotRecord r;
  std::string state;
  uint8_t version = 0;
  if (!GetVersion(in, kSnapshotRecordVersion, version) || !in.GetLengthPrefixed(r.id) ||
      !in.GetFixed64(r.seq) || !in.GetLengthPrefixed(r.volume_id) || !in.GetFixed64(r.tree) ||
      !in.GetLengthPrefixed(r.parent_id) || !in.GetBytes(1, state) || state[0] > 2 ||
      !in.GetLengthPrefixed(r.state_message) || !in.GetFixed64(r.volume_size_bytes) ||
      !in.GetFixed64(r.incremental_bytes) || !in.GetFixed64(r.changed_chunk_count) ||
      !in.GetFixed64(r.start_time_micros) || !in.GetBool(r.deleted) ||
      !in.GetLengthPrefixed(r.description) || !GetTags(in, r.tags)) {
    return absl::DataLossError("catalog: corrupt snapshot record");
  }
  if (version >= 2) {
    uint32_t shared = 0;
    if (!in.GetLengthPrefixed(r.owner) || !in.GetFixed32(shared) || shared > 10000) {
      return absl::DataLossError("catalog: corrupt snapshot record");
    }
    r.shared_with.resize(shared);
    for (std::string& account : r.shared_with) {
      if (!in.GetLengthPrefixed(account))
        return absl::DataLossError("catalog: corrupt snapshot record");
    }
  }
  if (version >= 3 && !GetEncryption(in, r.encryption)) {
    return absl::DataLossError("catalog: corrupt snapshot record");
  }
  if (version >= 4) {
    std::string mode;
    if (!in.GetBytes(1, mode) || mode[0] > 2 || !in.GetFixed64(r.lock.created_micros) ||
        !in.GetFixed64(r.lock.duration_start_micros) ||
        !in.GetFixed64(r.lock.cool_off_until_micros) || !in.GetFixed64(r.lock.expires_micros) ||
        !in.GetFixed32(r.lock.duration_days) || !in.GetFixed32(r.lock.cool_off_hours) ||
        !in.GetFixed64(r.recycled_micros) || !in.GetFixed64(r.recycle_until_micros)) {
      return absl::DataLossError("catalog: corrupt snapshot record");
    }
    r.lock.mode = static_cast<uint8_t>(mode[0]);
  }
  if (!in.done()) return absl::DataLossError("catalog: corrupt snapshot record");
  r.state = static_cast<SnapshotRecordState>(state[0]);
  return r;
}

}  // namespace strata::meta
