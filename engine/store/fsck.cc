// strata-fsck's checks: each region's catalog and segments, cross-checked both ways.

#include "strata/fsck.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "chunk/chunk_store.h"
#include "meta/catalog.h"
#include "meta/schema.h"
#include "meta/shared_catalog.h"
#include "rados/cluster.h"
#include "rados/head_objects.h"
#include "region/archive_format.h"
#include "store/backend_file.h"
#include "util/status_macros.h"
#include "volume/head.h"
#include "volume/snapshot_tree.h"

namespace strata {
namespace {

class RegionChecker {
 public:
  RegionChecker(Env* env, std::string name, std::string dir, rados::Cluster* cluster,
                FsckReport& report)
      : env_(env),
        name_(std::move(name)),
        dir_(std::move(dir)),
        cluster_(cluster),
        report_(report) {}

  absl::Status Run() {
    if (cluster_ != nullptr) {
      const std::string ns = cluster_->RegionNamespace(name_);
      STRATA_ASSIGN_OR_RETURN(catalog_,
                              meta::Catalog::OpenRados(cluster_->IndexPool(ns), "catalog"));
      STRATA_ASSIGN_OR_RETURN(
          chunks_,
          chunk::ChunkStore::OpenRadosStore(
              cluster_->DataPool(ns), catalog_.get(),
              {.read_only = true, .gc_grace_seconds = cluster_->options().gc_grace_seconds}));
    } else {
      STRATA_ASSIGN_OR_RETURN(catalog_, meta::Catalog::OpenRocksDb(env_, dir_ + "/catalog"));
      STRATA_ASSIGN_OR_RETURN(
          chunks_, chunk::ChunkStore::OpenSegmentStore(env_, dir_ + "/segments", catalog_.get(),
                                                       {.read_only = true}));
    }
    STRATA_RETURN_IF_ERROR(LoadSnapshots());
    STRATA_RETURN_IF_ERROR(CheckManifests());
    STRATA_RETURN_IF_ERROR(CheckResolveIndex());
    STRATA_RETURN_IF_ERROR(CheckChunks());
    return CheckVolumes();
  }

 private:
  void Find(std::string finding) { report_.findings.push_back(absl::StrCat(name_, ": ", finding)); }

  absl::Status LoadSnapshots() {
    STRATA_RETURN_IF_ERROR(
        catalog_->Scan(meta::kSnapshotPrefix, "", [&](absl::string_view key, absl::string_view v) {
          absl::StatusOr<meta::SnapshotRecord> r = meta::SnapshotRecord::Decode(v);
          if (!r.ok()) {
            Find(absl::StrCat("corrupt snapshot record ", key));
            return true;
          }
          by_seq_[r->seq] = *r;
          ids_[r->id] = r->seq;
          ++report_.snapshots_checked;
          return true;
        }));
    // A restore from the archive that a stop cut short holds a manifest under the seq and tree
    // its "a/" record names (the next open drops it and restores again).
    return catalog_->Scan(
        meta::kArchivePrefix, "", [&](absl::string_view key, absl::string_view v) {
          absl::StatusOr<region::ArchiveRecord> a = region::ArchiveRecord::Decode(v);
          if (!a.ok()) {
            Find(absl::StrCat("corrupt archive tier record ", key));
          } else if (a->state == region::TierState::kRestoring && a->restore_seq != 0 &&
                     !by_seq_.contains(a->restore_seq)) {
            meta::SnapshotRecord partial = a->snapshot;
            partial.seq = a->restore_seq;
            partial.tree = a->restore_tree;
            partial.parent_id.clear();
            by_seq_[partial.seq] = partial;
          }
          return true;
        });
  }

  absl::Status CheckManifests() {
    for (const auto& [seq, r] : by_seq_) {
      // A failed snapshot holds no data and is outside the tree; its parent may be gone.
      if (!r.parent_id.empty() && r.state != meta::SnapshotRecordState::kError) {
        auto parent = ids_.find(r.parent_id);
        if (parent == ids_.end()) {
          Find(absl::StrCat("snapshot ", r.id, ": parent ", r.parent_id, " is missing"));
        } else if (by_seq_[parent->second].tree != r.tree || parent->second >= seq) {
          Find(absl::StrCat("snapshot ", r.id, ": parent ", r.parent_id, " is not its ancestor"));
        }
      }
    }
    return catalog_->Scan("m/", "", [&](absl::string_view key, absl::string_view value) {
      ++report_.manifest_entries_checked;
      const uint64_t seq = util_decode_seq(key);
      auto it = by_seq_.find(seq);
      if (it == by_seq_.end()) {
        Find(absl::StrCat("manifest entry of unknown snapshot seq ", seq));
        return true;
      }
      const uint64_t c = meta::ManifestKeyChunk(key);
      manifest_.insert({it->second.tree, c, seq});
      absl::StatusOr<volume::ChunkEntry> entry = volume::DecodeEntry(value);
      if (!entry.ok()) {
        Find(absl::StrCat("snapshot ", it->second.id, ": corrupt manifest entry for chunk ", c));
      } else if (entry->has_value()) {
        ++references_[**entry];
      }
      return true;
    });
  }

  static uint64_t util_decode_seq(absl::string_view key) {
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<uint8_t>(key[2 + i]);
    return v;
  }

  absl::Status CheckResolveIndex() {
    std::set<std::tuple<uint64_t, uint64_t, uint64_t>> indexed;
    STRATA_RETURN_IF_ERROR(
        catalog_->Scan("r/", "", [&](absl::string_view key, absl::string_view value) {
          uint64_t tree = 0;
          for (int i = 0; i < 8; ++i) tree = (tree << 8) | static_cast<uint8_t>(key[2 + i]);
          const uint64_t c = meta::ResolveKeyChunk(key);
          const uint64_t seq = meta::ResolveKeySeq(key);
          indexed.insert({tree, c, seq});
          if (!manifest_.contains({tree, c, seq})) {
            Find(absl::StrCat("resolve index entry (chunk ", c, ", seq ", seq,
                              ") has no manifest entry"));
            return true;
          }
          auto manifest_value = catalog_->Get(meta::ManifestKey(seq, c));
          if (!manifest_value.ok() || !manifest_value->has_value() || **manifest_value != value) {
            Find(absl::StrCat("resolve index entry (chunk ", c, ", seq ", seq,
                              ") differs from the manifest"));
          }
          return true;
        }));
    for (const auto& entry : manifest_) {
      if (!indexed.contains(entry)) {
        Find(absl::StrCat("manifest entry (chunk ", std::get<1>(entry), ", seq ",
                          std::get<2>(entry), ") is missing from the resolve index"));
      }
    }
    return absl::OkStatus();
  }

  absl::Status CheckChunks() {
    std::set<chunk::ChunkKey> indexed;
    std::vector<std::pair<chunk::ChunkKey, chunk::ChunkLocation>> all;
    STRATA_RETURN_IF_ERROR(
        chunks_->ForEachChunk([&](const chunk::ChunkKey& key, const chunk::ChunkLocation& loc) {
          all.push_back({key, loc});
        }));
    for (const auto& [key, loc] : all) {
      ++report_.chunks_checked;
      indexed.insert(key);
      const uint64_t refs = references_.contains(key) ? references_[key] : 0;
      if (loc.refcount != refs) {
        Find(absl::StrCat("chunk ", key.ToString(), ": refcount ", loc.refcount, " but ", refs,
                          " manifest references"));
      }
      if (loc.refcount == 0) ++report_.reclaimable_chunks;
      if (absl::Status s = chunks_->VerifyRecord(key, loc); !s.ok()) Find(std::string(s.message()));
    }
    for (const auto& [key, count] : references_) {
      if (!indexed.contains(key)) {
        Find(absl::StrCat("chunk ", key.ToString(), ": referenced ", count,
                          " times but missing from the index"));
      }
    }
    STRATA_ASSIGN_OR_RETURN(chunk::ChunkStore::Unindexed unindexed, chunks_->CountUnindexed());
    report_.unindexed_chunks += unindexed.recent;
    if (unindexed.leaked > 0) {
      Find(absl::StrCat(unindexed.leaked,
                        " stored chunks have no index entry past the grace period (leaked; "
                        "garbage collection frees them)"));
    }
    return absl::OkStatus();
  }

  absl::Status CheckVolumes() {
    // RADOS: every node's volume records ("n/" node "/v/" id); their heads are only this node's.
    const bool shared = cluster_ != nullptr;
    const std::string own_prefix =
        shared ? meta::SharedCatalog::NodeKey(cluster_->options().node_id, meta::kVolumePrefix)
               : std::string(meta::kVolumePrefix);
    std::set<std::string> volumes;
    STRATA_RETURN_IF_ERROR(catalog_->Scan(
        shared ? "n/" : meta::kVolumePrefix, "", [&](absl::string_view key, absl::string_view v) {
          if (shared && !absl::StrContains(key, absl::StrCat("/", meta::kVolumePrefix)))
            return true;
          ++report_.volumes_checked;
          absl::StatusOr<meta::VolumeRecord> r = meta::VolumeRecord::Decode(v);
          if (!r.ok()) {
            Find(absl::StrCat("corrupt volume record ", key));
            return true;
          }
          volumes.insert(r->id);
          if (!r->last_snapshot_id.empty() && !ids_.contains(r->last_snapshot_id)) {
            Find(absl::StrCat("volume ", r->id, ": last snapshot ", r->last_snapshot_id,
                              " is missing"));
          }
          const std::string head = absl::StrCat(dir_, "/heads/", r->id, ".0.head");
          if (r->head == meta::HeadStore::kFiles && absl::StartsWith(key, own_prefix) &&
              !env_->FileExists(head)) {
            Find(absl::StrCat("volume ", r->id, ": head file is missing"));
          }
          return true;
        }));
    if (!shared) return absl::OkStatus();
    // Head objects in RADOS belong to a volume of some node (a deletion removes its record
    // first, so a crash in between leaves objects this finds).
    std::vector<std::string> oids;
    STRATA_RETURN_IF_ERROR(rados::FromRados(
        cluster_->DataPool(cluster_->RegionNamespace(name_)).List(&oids), "fsck: listing heads"));
    std::map<std::string, uint64_t> orphans;
    for (const std::string& oid : oids) {
      std::string volume_id;
      if (rados::HeadObjects::ParseObjectName(oid, &volume_id) && !volumes.contains(volume_id)) {
        ++orphans[volume_id];
      }
    }
    for (const auto& [id, count] : orphans) {
      Find(absl::StrCat(count, " head object(s) of volume ", id, ", which no node has"));
    }
    return absl::OkStatus();
  }

  Env* const env_;
  const std::string name_;
  const std::string dir_;
  rados::Cluster* const cluster_;  // Null: the local backend.
  FsckReport& report_;
  std::unique_ptr<meta::Catalog> catalog_;
  std::unique_ptr<chunk::ChunkStore> chunks_;
  std::map<uint64_t, meta::SnapshotRecord> by_seq_;
  std::map<std::string, uint64_t> ids_;
  std::set<std::tuple<uint64_t, uint64_t, uint64_t>> manifest_;  // (tree, chunk, seq)
  std::map<chunk::ChunkKey, uint64_t> references_;
};

}  // namespace

absl::StatusOr<FsckReport> CheckStore(const std::string& path, Env* env,
                                      const std::optional<CephBackendOptions>& ceph) {
  if (env == nullptr) env = Env::Default();
  const std::filesystem::path regions = std::filesystem::path(path) / "regions";
  std::error_code ec;
  if (!std::filesystem::is_directory(regions, ec)) {
    return absl::NotFoundError(absl::StrCat("no Strata store in ", path));
  }
  STRATA_ASSIGN_OR_RETURN(std::unique_ptr<FileLock> lock, env->LockFile(path + "/LOCK"));
  STRATA_ASSIGN_OR_RETURN(store::BackendRecord recorded, store::ReadBackendFile(env, path));
  STRATA_ASSIGN_OR_RETURN(std::optional<CephBackendOptions> backend,
                          store::SettleBackend(recorded, std::nullopt, true, path));
  std::shared_ptr<rados::Cluster> cluster;
  if (backend.has_value()) {
    // The recorded pools and namespace, reached with the caller's connection settings.
    if (ceph.has_value()) {
      backend->conf_file = ceph->conf_file.empty() ? backend->conf_file : ceph->conf_file;
      if (!ceph->client_id.empty()) backend->client_id = ceph->client_id;
      backend->timeout_seconds = ceph->timeout_seconds;
      backend->gc_grace_seconds = ceph->gc_grace_seconds;
    }
    // This node's name (DIR/node-id): its volumes are the ones with heads here.
    std::ifstream node_id(path + "/node-id");
    std::getline(node_id, backend->node_id);
    STRATA_ASSIGN_OR_RETURN(cluster, rados::Cluster::Connect(*backend));
  }
  FsckReport report;
  for (const auto& entry : std::filesystem::directory_iterator(regions, ec)) {
    if (!entry.is_directory()) continue;
    ++report.regions_checked;
    RegionChecker checker(env, entry.path().filename().string(), entry.path().string(),
                          cluster.get(), report);
    STRATA_RETURN_IF_ERROR(checker.Run());
  }
  return report;
}

}  // namespace strata
