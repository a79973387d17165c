#pragma once
// The catalog: a small ordered key-value interface that holds every piece of metadata (volumes,
// snapshots, manifests, the chunk index). RocksDB (the local backend) and the omap of a RADOS
// object (the RADOS backend) implement it.

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "rados/pool.h"
#include "strata/env.h"

namespace strata::meta {

// An ordered list of puts and deletes applied atomically by Catalog::Write, with guards: the
// batch applies only if every expected key still holds its expected value.
class WriteBatch {
 public:
  void Put(std::string key, std::string value) {
    ops_.push_back({std::move(key), std::move(value), false});
  }
  void Delete(std::string key) { ops_.push_back({std::move(key), {}, true}); }
  // The batch applies only if `key` holds `value` when it is written (an absent key reads as
  // ""; expected values are never empty where absence matters). Otherwise Catalog::Write
  // returns kAborted and changes nothing: another writer came first; read again and retry.
  void Expect(std::string key, std::string value) {
    guards_.push_back({std::move(key), std::move(value)});
  }
  bool empty() const { return ops_.empty(); }
  size_t size() const { return ops_.size(); }

  struct Op {
    std::string key;
    std::string value;
    bool is_delete;
  };
  const std::vector<Op>& ops() const { return ops_; }
  const std::vector<std::pair<std::string, std::string>>& guards() const { return guards_; }

 private:
  std::vector<Op> ops_;
  std::vector<std::pair<std::string, std::string>> guards_;
};

// Called per entry of a scan in key order; returns false to stop.
using ScanFn = std::function<bool(absl::string_view key, absl::string_view value)>;

// Thread-safe.
class Catalog {
 public:
  virtual ~Catalog() = default;
  // Opens (creating if missing) a RocksDB catalog in directory `path` of `env` (not owned; must
  // outlive it). Env::Default() keeps RocksDB's own POSIX file system; any other Env holds the
  // catalog's files (meta/env_file_system.h).
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Catalog>> OpenRocksDb(
      Env* env, const std::string& path);
  // Opens the catalog held in the omap of one RADOS object, `object` in `pool` (a pool and
  // namespace), made at the first write. docs/formats/rados.md.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Catalog>> OpenRados(
      rados::Pool pool, const std::string& object);

  // Returns the value of `key`, or nullopt if absent.
  [[nodiscard]] virtual absl::StatusOr<std::optional<std::string>> Get(absl::string_view key) = 0;
  // The values of `keys` (nullopt where absent), in their order; one round trip where the
  // backing store allows.
  [[nodiscard]] virtual absl::StatusOr<std::vector<std::optional<std::string>>> GetMany(
      const std::vector<std::string>& keys) = 0;
  // Applies `batch` atomically and durably (synced before returning). kAborted when a guard
  // failed (nothing changed).
  [[nodiscard]] virtual absl::Status Write(const WriteBatch& batch) = 0;
  // Visits the entries whose key starts with `prefix`, from the first key >= `start` (which
  // must itself start with `prefix`, or be empty for the whole prefix).
  [[nodiscard]] virtual absl::Status Scan(absl::string_view prefix, absl::string_view start,
                                          const ScanFn& fn) = 0;
};

}  // namespace strata::meta
