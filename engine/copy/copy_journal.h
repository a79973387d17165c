#pragma once
// The records of a store's cross-region copies, in DIR/copies.json: one JSON array, rewritten
// whole through a temporary file, fsync and rename, so a reader (strata copy-stats, even while
// stratad runs) never sees half a file.

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "strata/transfer.h"

namespace strata::copy {

class CopyJournal {
 public:
  explicit CopyJournal(std::string path) : path_(std::move(path)) {}
  // Reads the file (none yet: empty).
  absl::Status Load();
  // Adds or replaces the record of `record.snapshot_id` and writes the file.
  absl::Status Put(const CopyRecord& record);
  absl::StatusOr<CopyRecord> Get(const std::string& snapshot_id) const;
  std::vector<CopyRecord> All() const;

  // Reads a journal file without holding the store (strata copy-stats).
  static absl::StatusOr<std::vector<CopyRecord>> Read(const std::string& path);

 private:
  absl::Status WriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string path_;
  mutable absl::Mutex mu_;
  std::map<std::string, CopyRecord> records_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> order_ ABSL_GUARDED_BY(mu_);  // Oldest first.
};

}  // namespace strata::copy
