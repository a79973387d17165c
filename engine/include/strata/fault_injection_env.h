#pragma once
// An Env wrapper that injects I/O errors and simulates power loss, for crash tests.

#include <map>
#include <memory>
#include <span>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "strata/env.h"

namespace strata {

// Per-file crash state of a FaultInjectionEnv.
struct FaultFileState {
  bool durable_entry = true;                   // False: created and its directory not synced since.
  bool dirty = false;                          // The undo image below is armed.
  uint64_t synced_size = 0;                    // Size at the last Sync (valid when dirty).
  std::map<uint64_t, std::string> undo_pages;  // Page index -> bytes as last synced.
  // Pages a failed Sync dropped, as Linux does: their dirty state is cleared without writing them,
  // so a later Sync that succeeds does not make them durable. Written again, a page leaves.
  std::map<uint64_t, std::string> lost_pages;
};

// What an injected fault does to the call it hits.
struct Fault {
  absl::Status status;  // Returned by the failing call (EIO as kDataLoss, ENOSPC as
                        // kResourceExhausted: io/errno.h).
  // The failing call alone fails and later calls succeed (a transient error); otherwise every
  // later call fails too (a dead disk).
  bool transient = false;
  // A failing Write first writes a prefix of its data (a short write), as a full disk does.
  bool short_write = false;
};

// Wraps `base` (not owned; must outlive this) and remembers, for each file written through it,
// the content as of its last Sync. Crash() restores every file to that content, as power loss
// would; FailAfter() makes the n-th file operation and all later ones fail. Thread-safe.
class FaultInjectionEnv : public Env {
 public:
  explicit FaultInjectionEnv(Env* base);
  ~FaultInjectionEnv() override;

  // Makes the `n`-th operation from now (0 means the next) and every later one return `status`.
  // Every call of the Env and its files counts (OpenFile, DeleteFile, RenameFile, CreateDirs,
  // ListDir, SyncDir, LockFile, Read, Write, Sync, Size, Truncate, PunchHole) except FileExists
  // and NowMicros, which cannot fail.
  void FailAfter(int64_t n, absl::Status status);
  // The same with the fault's kind spelled out.
  void InjectAt(int64_t n, Fault fault);
  // Operations counted since construction: a test runs a workload once to learn how many calls
  // it makes, then injects a fault at each of them in turn.
  int64_t operations() const;
  // Stops injecting errors.
  void ClearFaults();
  // Drops everything written since each file's last Sync. When `tear` is true, a file with an
  // unsynced tail keeps a random prefix of it instead (a torn write), chosen by `seed`.
  // Files created and never synced (nor their directory) disappear.
  [[nodiscard]] absl::Status Crash(bool tear = false, uint64_t seed = 0);

  absl::StatusOr<std::unique_ptr<File>> OpenFile(const std::string& path, bool create) override;
  absl::Status DeleteFile(const std::string& path) override;
  absl::Status RenameFile(const std::string& from, const std::string& to) override;
  bool FileExists(const std::string& path) override;
  absl::Status CreateDirs(const std::string& path) override;
  absl::StatusOr<std::vector<std::string>> ListDir(const std::string& path) override;
  absl::Status SyncDir(const std::string& path) override;
  absl::StatusOr<std::unique_ptr<FileLock>> LockFile(const std::string& path) override;
  uint64_t NowMicros() override;

  // Internal: called by the wrapped files. `short_write` is set when the failing call is a Write
  // that should write a prefix first.
  absl::Status MaybeFail(bool* short_write = nullptr);
  void MarkSyncFailed(const std::string& path);
  void SaveUndo(const std::string& path, File& base, uint64_t offset_bytes, uint64_t length_bytes,
                bool skip_holes);
  void MarkSynced(const std::string& path, uint64_t size_bytes);

 private:
  Env* const base_;
  mutable absl::Mutex mu_;
  int64_t fail_countdown_ ABSL_GUARDED_BY(mu_) = -1;  // -1: no fault armed.
  Fault fault_ ABSL_GUARDED_BY(mu_);
  int64_t operations_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, FaultFileState> files_
      ABSL_GUARDED_BY(mu_);  // Files written since tracking.
};

}  // namespace strata
