// RadosChunkStore: one RADOS object per chunk (its record), created exclusively so that two
// nodes storing the same bytes at once store them once; the index ("c/" keys, refcounts) in
// the catalog, updated with guards so that nodes never lose each other's counts.
// docs/formats/rados.md: names, the life of a chunk, and why garbage collection is safe with
// several nodes (a grace period, and deletes guarded by the object's version).

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <map>
#include <memory>
#include <set>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "chunk/chunk_index.h"
#include "chunk/chunk_record.h"
#include "chunk/chunk_store.h"
#include "chunk/segment_format.h"
#include "rados/cluster.h"
#include "util/log.h"
#include "util/status_macros.h"

namespace strata::chunk {
namespace {

using rados::FromRados;

inline constexpr uint16_t kMaxVariants = 64;
// Commits retried after another node changed one of the same refcounts meanwhile.
inline constexpr int kMaxCommitAttempts = 32;
inline constexpr absl::string_view kObjectPrefix = "chunk.";
// Puts in flight per ingest: as many as `rados bench` needs to reach a one-OSD cluster's
// throughput here (bench/rados_ingest.py).
inline constexpr int kPutConcurrency = 16;
// Set on every store and reuse of a chunk: its mtime says when it was last wanted.
inline constexpr char kTouchedXattr[] = "strata.touched";

std::string ObjectName(const ChunkKey& key) {
  return absl::StrCat(kObjectPrefix, absl::BytesToHexString(key.Encode()));
}
std::optional<ChunkKey> KeyOfObject(absl::string_view name) {
  if (!absl::StartsWith(name, kObjectPrefix)) return std::nullopt;
  name.remove_prefix(kObjectPrefix.size());
  if (name.size() != 2 * kChunkKeyBytes ||
      name.find_first_not_of("0123456789abcdef") != absl::string_view::npos) {
    return std::nullopt;
  }
  return ChunkKey::Decode(absl::HexStringToBytes(name));
}

std::string_view AsText(std::span<const std::byte> bytes) {
  return std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

std::string NowText() { return std::to_string(std::time(nullptr)); }

class RadosChunkStore final : public ChunkStore {
 public:
  RadosChunkStore(rados::Pool data, meta::Catalog* catalog, ChunkStoreOptions options)
      : data_(std::move(data)), catalog_(catalog), options_(options) {}

  absl::StatusOr<ChunkKey> Put(uint32_t domain, std::span<const std::byte> data) override {
    if (options_.read_only) return absl::FailedPreconditionError("chunk store is read-only");
    const Fingerprint fp = FingerprintOf(domain, data);
    std::unique_ptr<std::byte[]> existing;  // A stored chunk's bytes, to compare.
    for (uint16_t variant = 0; variant < kMaxVariants; ++variant) {
      const ChunkKey key{domain, fp, variant};
      // Pinned before the object is made or touched: this node's collection, which checks pins
      // again after it reads an object's age, never takes a chunk an ingest is putting (whatever
      // the grace period, even 0). Other nodes' collections have the grace period and the
      // object's version.
      Pin(key, ChunkLocation{});
      const ChunkKey unpin[] = {key};
      std::vector<std::byte> record = MakeRecord(key, data, options_.compression);
      const int rc =
          data_.CreateExclusive(ObjectName(key), AsText(record), kTouchedXattr, NowText());
      if (rc == 0) {
        const RecordHeader header = ReadRecordHeader(record);
        SetPinnedLocation(
            key, ChunkLocation{0, 0, header.stored_length, header.raw_length, header.flags, 0});
        return key;
      }
      if (rc != -EEXIST) {
        Unpin(unpin);
        return FromRados(rc, absl::StrCat("storing chunk ", key.ToString()));
      }
      // Stored before (here or by another node): only identical bytes may share it.
      if (existing == nullptr) existing = std::make_unique_for_overwrite<std::byte[]>(data.size());
      absl::StatusOr<ChunkLocation> found = ReadObject(key, std::span(existing.get(), data.size()));
      if (found.ok() && std::memcmp(existing.get(), data.data(), data.size()) == 0) {
        // Touched, so that no node's garbage collection takes it before this node commits.
        const int touched = data_.Touch(ObjectName(key), kTouchedXattr, NowText());
        if (touched == -ENOENT) {  // Collected just now: store it again.
          Unpin(unpin);
          --variant;
          continue;
        }
        if (touched < 0) Unpin(unpin);
        STRATA_RETURN_IF_ERROR(FromRados(touched, absl::StrCat("reusing ", key.ToString())));
        SetPinnedLocation(key, *found);
        return key;
      }
      Unpin(unpin);
      if (!found.ok() && !absl::IsDataLoss(found.status()) && !absl::IsNotFound(found.status())) {
        return found.status();
      }
      STRATA_LOG(kWarning, "fingerprint collision on chunk ", key.ToString(),
                 ": storing as another variant");
    }
    return absl::InternalError(
        absl::StrCat("more than ", kMaxVariants, " colliding chunks for one fingerprint"));
  }

  absl::Status Read(const ChunkKey& key, std::span<std::byte> out) override {
    return ReadObject(key, out).status();
  }

  absl::Status ReadMany(std::span<const ChunkKey> keys,
                        std::span<const std::span<std::byte>> outs) override {
    std::vector<std::string> names;
    uint64_t longest = 0;
    for (size_t i = 0; i < keys.size(); ++i) {
      names.push_back(ObjectName(keys[i]));
      longest = std::max<uint64_t>(longest, outs[i].size());
    }
    absl::Status first_error;
    data_.ReadMany(names, kRecordHeaderBytes + longest,
                   [&](size_t i, int rc, std::string_view record) {
                     if (first_error.ok()) {
                       first_error = DecodeObject(keys[i], rc, record, outs[i]).status();
                     }
                   });
    return first_error;
  }

  absl::Status Commit(meta::WriteBatch batch, std::span<const ChunkKey> add_refs,
                      std::span<const ChunkKey> drop_refs) override {
    std::map<ChunkKey, int64_t> deltas;
    for (const ChunkKey& k : add_refs) ++deltas[k];
    for (const ChunkKey& k : drop_refs) --deltas[k];
    std::vector<std::string> index_keys;
    for (const auto& [key, delta] : deltas) index_keys.push_back(IndexKey(key));
    for (int attempt = 0; attempt < kMaxCommitAttempts; ++attempt) {
      STRATA_ASSIGN_OR_RETURN(std::vector<std::optional<std::string>> current,
                              catalog_->GetMany(index_keys));
      meta::WriteBatch guarded = batch;
      size_t i = 0;
      for (const auto& [key, delta] : deltas) {
        const std::optional<std::string>& value = current[i];
        std::optional<ChunkLocation> loc;
        if (value.has_value()) {
          STRATA_ASSIGN_OR_RETURN(loc, DecodeIndexEntry(key, *value));
        } else {
          loc = PinnedLocation(key);
          if (!loc.has_value()) {
            return absl::InternalError(absl::StrCat("commit: chunk ", key.ToString(), " unknown"));
          }
          loc->refcount = 0;
        }
        const int64_t refcount = static_cast<int64_t>(loc->refcount) + delta;
        STRATA_CHECK(refcount >= 0);
        loc->refcount = static_cast<uint64_t>(refcount);
        guarded.Expect(index_keys[i], value.value_or(""));
        guarded.Put(index_keys[i], loc->Encode());
        ++i;
      }
      absl::Status written = catalog_->Write(guarded);
      if (absl::IsAborted(written)) continue;  // Another node changed a refcount: recount.
      STRATA_RETURN_IF_ERROR(written);
      Unpin(add_refs);
      return absl::OkStatus();
    }
    return absl::UnavailableError(
        absl::StrCat("commit: refcounts kept changing under ", kMaxCommitAttempts, " attempts"));
  }

  int PutConcurrency() const override { return kPutConcurrency; }
  bool reads_wait_on_network() const override { return true; }

  void Unpin(std::span<const ChunkKey> keys) override {
    absl::MutexLock lock(&mu_);
    for (const ChunkKey& k : keys) {
      auto it = pins_.find(k);
      STRATA_CHECK(it != pins_.end());
      if (--it->second.count == 0) pins_.erase(it);
    }
  }

  absl::StatusOr<uint64_t> CollectGarbage() override {
    absl::MutexLock gc_lock(&gc_mu_);
    std::vector<std::pair<ChunkKey, std::string>> unreferenced;  // With their entries.
    std::set<ChunkKey> indexed;
    STRATA_RETURN_IF_ERROR(ScanIndex(*catalog_, [&](const ChunkKey& key, const ChunkLocation& loc) {
      indexed.insert(key);
      if (loc.refcount == 0) unreferenced.push_back({key, loc.Encode()});
    }));
    uint64_t reclaimed = 0;
    for (const auto& [key, value] : unreferenced) {
      if (IsPinned(key)) continue;
      STRATA_ASSIGN_OR_RETURN(std::optional<ObjectAge> age, Age(key));
      if (age.has_value() && !age->expired) continue;
      // Pinned since (Put pins before it touches): the age read may be of its touch.
      if (IsPinned(key)) continue;
      meta::WriteBatch drop;
      drop.Expect(IndexKey(key), value);
      drop.Delete(IndexKey(key));
      absl::Status dropped = catalog_->Write(drop);
      if (absl::IsAborted(dropped)) continue;  // Referenced again meanwhile.
      STRATA_RETURN_IF_ERROR(dropped);
      if (age.has_value()) {
        STRATA_ASSIGN_OR_RETURN(bool removed, RemoveIfUnchanged(key, *age));
        if (removed) reclaimed += age->size;
      }
    }
    // Objects with no index entry: stored by a snapshot that never committed (a node crashed),
    // or left by a drop above whose remove did not happen.
    std::vector<std::string> names;
    STRATA_RETURN_IF_ERROR(FromRados(data_.List(&names), "garbage collection: listing chunks"));
    for (const std::string& name : names) {
      std::optional<ChunkKey> key = KeyOfObject(name);
      if (!key.has_value() || indexed.contains(*key) || IsPinned(*key)) continue;
      STRATA_ASSIGN_OR_RETURN(std::optional<ObjectAge> age, Age(*key));
      if (!age.has_value() || !age->expired) continue;
      if (IsPinned(*key)) continue;  // Being put since the check above (see Put).
      // Committed since the index was read: its index entry exists now.
      STRATA_ASSIGN_OR_RETURN(std::optional<std::string> entry, catalog_->Get(IndexKey(*key)));
      if (entry.has_value()) continue;
      STRATA_ASSIGN_OR_RETURN(bool removed, RemoveIfUnchanged(*key, *age));
      if (removed) reclaimed += age->size;
    }
    return reclaimed;
  }

  absl::StatusOr<ChunkStoreStats> GetStats() override {
    ChunkStoreStats stats;
    STRATA_RETURN_IF_ERROR(ForEachChunk([&](const ChunkKey&, const ChunkLocation& loc) {
      stats.segment_file_bytes += kRecordHeaderBytes + loc.stored_length;
      if (loc.refcount == 0) return;
      ++stats.chunk_count;
      stats.referenced_chunk_count += loc.refcount;
      stats.stored_bytes += kRecordHeaderBytes + loc.stored_length;
    }));
    return stats;
  }

  absl::Status ForEachChunk(const ChunkVisitor& visit) override {
    return ScanIndex(*catalog_, visit);
  }

  absl::StatusOr<Unindexed> CountUnindexed() override {
    std::set<ChunkKey> indexed;
    STRATA_RETURN_IF_ERROR(
        ForEachChunk([&](const ChunkKey& key, const ChunkLocation&) { indexed.insert(key); }));
    Unindexed count;
    std::vector<std::string> names;
    STRATA_RETURN_IF_ERROR(FromRados(data_.List(&names), "fsck: listing chunks"));
    for (const std::string& name : names) {
      std::optional<ChunkKey> key = KeyOfObject(name);
      if (!key.has_value() || indexed.contains(*key)) continue;
      STRATA_ASSIGN_OR_RETURN(std::optional<ObjectAge> age, Age(*key));
      if (!age.has_value()) continue;
      ++(age->expired ? count.leaked : count.recent);
    }
    return count;
  }

  absl::Status VerifyRecord(const ChunkKey& key, const ChunkLocation& location) override {
    std::vector<std::byte> out(location.raw_length);
    STRATA_ASSIGN_OR_RETURN(ChunkLocation found, ReadObject(key, out));
    if (found.stored_length != location.stored_length) {
      return absl::DataLossError(
          absl::StrCat("chunk ", key.ToString(), ": stored length differs from its index entry"));
    }
    return absl::OkStatus();
  }

  std::string SegmentPath(uint64_t) const override { return {}; }

 private:
  struct Pinned {
    int64_t count = 0;
    ChunkLocation location;
  };
  struct ObjectAge {
    uint64_t size = 0;
    uint64_t version = 0;
    bool expired = false;  // Untouched for the grace period.
  };

  void Pin(const ChunkKey& key, const ChunkLocation& location) {
    absl::MutexLock lock(&mu_);
    Pinned& pin = pins_[key];
    ++pin.count;
    pin.location = location;
  }
  void SetPinnedLocation(const ChunkKey& key, const ChunkLocation& location) {
    absl::MutexLock lock(&mu_);
    pins_[key].location = location;
  }
  bool IsPinned(const ChunkKey& key) {
    absl::MutexLock lock(&mu_);
    return pins_.contains(key);
  }
  std::optional<ChunkLocation> PinnedLocation(const ChunkKey& key) {
    absl::MutexLock lock(&mu_);
    auto it = pins_.find(key);
    if (it == pins_.end()) return std::nullopt;
    return it->second.location;
  }

  // Reads and verifies a chunk's object into `out` (the chunk's size).
  absl::StatusOr<ChunkLocation> ReadObject(const ChunkKey& key, std::span<std::byte> out) {
    absl::StatusOr<ChunkLocation> found;
    data_.ReadMany({ObjectName(key)}, kRecordHeaderBytes + out.size(),
                   [&](size_t, int rc, std::string_view record) {
                     found = DecodeObject(key, rc, record, out);
                   });
    return found;
  }

  // Verifies a chunk's object `record`, read with result `rc`, into `out`.
  static absl::StatusOr<ChunkLocation> DecodeObject(const ChunkKey& key, int rc,
                                                    std::string_view record,
                                                    std::span<std::byte> out) {
    if (rc == -ENOENT) {
      return absl::NotFoundError(absl::StrCat("chunk ", key.ToString(), " not found"));
    }
    STRATA_RETURN_IF_ERROR(FromRados(rc, absl::StrCat("reading chunk ", key.ToString())));
    std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(record.data()),
                                     record.size());
    STRATA_RETURN_IF_ERROR(
        DecodeRecord(key, bytes, out, absl::StrCat("RADOS object ", ObjectName(key))));
    const RecordHeader header = ReadRecordHeader(bytes);
    return ChunkLocation{0, 0, header.stored_length, header.raw_length, header.flags, 0};
  }

  // The object's size, version and whether the grace period has passed; nullopt if it is gone.
  absl::StatusOr<std::optional<ObjectAge>> Age(const ChunkKey& key) {
    uint64_t size = 0, version = 0;
    int64_t mtime = 0;
    const int rc = data_.Stat(ObjectName(key), &size, &mtime, &version);
    if (rc == -ENOENT) return std::nullopt;
    STRATA_RETURN_IF_ERROR(FromRados(rc, "garbage collection: stat"));
    const int64_t idle = static_cast<int64_t>(std::time(nullptr)) - mtime;
    return ObjectAge{size, version, idle >= static_cast<int64_t>(options_.gc_grace_seconds)};
  }

  // Removes the object unless it was touched (its version moved) since `age` was taken.
  absl::StatusOr<bool> RemoveIfUnchanged(const ChunkKey& key, const ObjectAge& age) {
    const int rc = data_.RemoveIfVersion(ObjectName(key), age.version);
    if (rc == -ENOENT || rc == -ERANGE || rc == -EOVERFLOW) return false;
    STRATA_RETURN_IF_ERROR(FromRados(rc, absl::StrCat("removing chunk ", key.ToString())));
    return true;
  }

  const rados::Pool data_;
  meta::Catalog* const catalog_;
  const ChunkStoreOptions options_;

  absl::Mutex gc_mu_;  // One collection at a time in this process.
  absl::Mutex mu_;
  absl::flat_hash_map<ChunkKey, Pinned> pins_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

absl::StatusOr<std::unique_ptr<ChunkStore>> ChunkStore::OpenRadosStore(
    rados::Pool data, meta::Catalog* catalog, const ChunkStoreOptions& options) {
  return std::make_unique<RadosChunkStore>(std::move(data), catalog, options);
}

}  // namespace strata::chunk
