#pragma once
// The catalog: a small ordered key-value interface that holds every piece of metadata (volumes,
// snapshots, manifests, the chunk index). RocksDB is its first implementation; a RADOS omap one
// can replace it (DESIGN.md, Scale-out).

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace strata::meta {

// An ordered list of puts and deletes applied atomically by Catalog::Write.
class WriteBatch {
 public:
  void Put(std::string key, std::string value) {
    ops_.push_back({std::move(key), std::move(value), false});
  }
  void Delete(std::string key) { ops_.push_back({std::move(key), {}, true}); }
  bool empty() const { return ops_.empty(); }
  size_t size() const { return ops_.size(); }

  struct Op {
    std::string key;
    std::string value;
    bool is_delete;
  };
  const std::vector<Op>& ops() const { return ops_; }

 private:
  std::vector<Op> ops_;
};

// Called per entry of a scan in key order; returns false to stop.
using ScanFn = std::function<bool(absl::string_view key, absl::string_view value)>;

// Thread-safe.
class Catalog {
 public:
  virtual ~Catalog() = default;
  // Opens (creating if missing) a RocksDB catalog in directory `path`.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Catalog>> OpenRocksDb(
      const std::string& path);

  // Returns the value of `key`, or nullopt if absent.
  [[nodiscard]] virtual absl::StatusOr<std::optional<std::string>> Get(absl::string_view key) = 0;
  // Applies `batch` atomically and durably (synced before returning).
  [[nodiscard]] virtual absl::Status Write(const WriteBatch& batch) = 0;
  // Visits the entries whose key starts with `prefix`, from the first key >= `start` (which
  // must itself start with `prefix`, or be empty for the whole prefix).
  [[nodiscard]] virtual absl::Status Scan(absl::string_view prefix, absl::string_view start,
                                          const ScanFn& fn) = 0;
};

}  // namespace strata::meta
