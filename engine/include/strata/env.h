#pragma once
// The I/O seam: every file operation and clock read of the engine goes through an Env, so tests
// can run a store on memory (NewMemEnv) or inject faults and power loss (FaultInjectionEnv).

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace strata {

// A file opened for positional reads and writes. Thread-safe: positional calls on one File may
// run concurrently (as pread/pwrite).
class File {
 public:
  virtual ~File() = default;
  // Fills all of `out` from `offset_bytes`. Bytes past the end of the file read as zeros.
  [[nodiscard]] virtual absl::Status Read(uint64_t offset_bytes, std::span<std::byte> out) = 0;
  // Writes all of `data` at `offset_bytes`, extending the file if needed. Not durable until Sync.
  [[nodiscard]] virtual absl::Status Write(uint64_t offset_bytes,
                                           std::span<const std::byte> data) = 0;
  // Makes every completed Write (and size change) durable.
  [[nodiscard]] virtual absl::Status Sync() = 0;
  [[nodiscard]] virtual absl::StatusOr<uint64_t> Size() = 0;
  // Sets the file size; growing adds a hole that reads as zeros.
  [[nodiscard]] virtual absl::Status Truncate(uint64_t size_bytes) = 0;
  // Deallocates a range so it reads as zeros without using space. Keeps the file size.
  [[nodiscard]] virtual absl::Status PunchHole(uint64_t offset_bytes, uint64_t length_bytes) = 0;
  // The file descriptor, for I/O through an IoRing (strata/io_ring.h); -1 for files that are not
  // kernel files (memory, fault injection), whose I/O goes through the calls above only.
  virtual int native_handle() const { return -1; }
};

// A held exclusive lock on a path; released on destruction.
class FileLock {
 public:
  virtual ~FileLock() = default;
};

class Env {
 public:
  virtual ~Env() = default;

  // Returns the process-wide POSIX Env (pread/pwrite). Never deleted.
  static Env* Default();

  // Opens `path` for reading and writing, creating it if `create` is true.
  // kNotFound if it does not exist and `create` is false.
  [[nodiscard]] virtual absl::StatusOr<std::unique_ptr<File>> OpenFile(const std::string& path,
                                                                       bool create) = 0;
  [[nodiscard]] virtual absl::Status DeleteFile(const std::string& path) = 0;
  // Atomically replaces `to` with `from`; durable once the parent directory is synced.
  [[nodiscard]] virtual absl::Status RenameFile(const std::string& from, const std::string& to) = 0;
  virtual bool FileExists(const std::string& path) = 0;
  // Creates `path` and any missing parents. OK if it exists.
  [[nodiscard]] virtual absl::Status CreateDirs(const std::string& path) = 0;
  // Returns the names (not paths) of the entries of directory `path`.
  [[nodiscard]] virtual absl::StatusOr<std::vector<std::string>> ListDir(
      const std::string& path) = 0;
  // Makes the directory entries (creations, renames, deletions) in `path` durable.
  [[nodiscard]] virtual absl::Status SyncDir(const std::string& path) = 0;
  // Takes an exclusive lock on `path` (created if missing); kFailedPrecondition if another
  // process or Env user holds it.
  [[nodiscard]] virtual absl::StatusOr<std::unique_ptr<FileLock>> LockFile(
      const std::string& path) = 0;
  // Microseconds since the Unix epoch.
  virtual uint64_t NowMicros() = 0;
};

// Returns a new Env that keeps every file in memory. Files outlive File handles until deleted.
std::unique_ptr<Env> NewMemEnv();

}  // namespace strata
