#pragma once
// RocksDB's files through a strata::Env: the catalog of a store opened on a memory or
// fault-injecting Env lives in that Env, so a simulated power loss cuts the catalog and the
// segments at the same instant.

#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "rocksdb/file_system.h"
#include "strata/env.h"

namespace strata::meta {

// The last error (other than not-found) the file system's own calls returned. RocksDB rewrites
// some errors (at open, a failed open of CURRENT is reported as "Direct I/O is not supported"),
// so the catalog adds this one to its message. Thread-safe.
class LastIoError {
 public:
  void Set(const absl::Status& status);
  std::string Get() const;

 private:
  mutable absl::Mutex mu_;
  std::string message_ ABSL_GUARDED_BY(mu_);
};

// Returns a RocksDB file system whose every file operation goes to `env` (not owned; must outlive
// it). Appends become positional writes at the file's end, Sync and directory fsync map to Sync
// and SyncDir, and reads stop at the file's size (an Env reads zeros past it).
// `last_error` (may be null) records the file system's errors.
std::shared_ptr<rocksdb::FileSystem> NewEnvFileSystem(Env* env,
                                                      std::shared_ptr<LastIoError> last_error);

}  // namespace strata::meta
