#pragma once
// A volume's head: its live data, written in place. Stored as extent files of kHeadExtentBytes
// each (ext4 caps a file at 16 TiB; a volume reaches 64 TiB), named "<volume>.<n>.head".
// Sparse: unwritten ranges use no space. docs/formats/layout.md.

#include <atomic>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "strata/env.h"
#include "strata/io_ring.h"

namespace strata::volume {

inline constexpr uint64_t kHeadExtentBytes = uint64_t{4} << 40;

class Head {
 public:
  // Opens (with `create`, creates) the extent files for a `size_bytes` head named `base_path`
  // ("DIR/heads/vol-..."). `env` must outlive the Head. Thread-safe for positional I/O.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Head>> Open(Env* env, std::string base_path,
                                                                  uint64_t size_bytes, bool create);
  // Deletes every extent file of the head named `base_path`.
  [[nodiscard]] static absl::Status Delete(Env* env, const std::string& base_path);
  // The file names ("vol-....<n>.head") of a head, for orphan detection.
  static bool ParseFileName(const std::string& name, std::string& volume_id);

  [[nodiscard]] absl::Status Read(uint64_t offset_bytes, std::span<std::byte> out);
  [[nodiscard]] absl::Status Write(uint64_t offset_bytes, std::span<const std::byte> data);
  [[nodiscard]] absl::Status PunchHole(uint64_t offset_bytes, uint64_t length_bytes);
  // Queue a read or write in `ring` (the I/O of Read/Write, finished by `op`). False, with
  // nothing queued, when the range spans two extent files, the Env's files have no descriptor
  // or the ring is full: then use Read/Write.
  bool QueueRead(uint64_t offset_bytes, std::span<std::byte> out, IoRing& ring, IoRing::Op* op);
  bool QueueWrite(uint64_t offset_bytes, std::span<const std::byte> data, IoRing& ring,
                  IoRing::Op* op);
  // A queued write at `offset_bytes` has finished: the next Sync covers it.
  void NoteWritten(uint64_t offset_bytes);
  // Makes completed writes durable (syncs only extents written since the last Sync). Once an
  // fsync has failed, every later Sync fails too (kDataLoss): Linux drops the dirty pages a
  // failed fsync could not write, so a later fsync that succeeds proves nothing. The head is
  // trusted again only when reopened.
  [[nodiscard]] absl::Status Sync();
  // Grows to `size_bytes`, creating extent files as needed, and syncs. REQUIRES: exclusive use.
  [[nodiscard]] absl::Status Grow(uint64_t size_bytes);

 private:
  Head(Env* env, std::string base_path) : env_(env), base_path_(std::move(base_path)) {}
  std::string ExtentPath(size_t index) const;
  // Calls `fn(extent, offset_in_extent, piece_start, piece_length)` for each extent a range
  // touches.
  template <typename Fn>
  absl::Status ForEachExtent(uint64_t offset_bytes, uint64_t length_bytes, Fn fn);

  Env* const env_;
  const std::string base_path_;
  uint64_t size_bytes_ = 0;
  struct Extent {
    std::unique_ptr<File> file;
    std::atomic<bool> unsynced{false};
  };
  std::vector<std::unique_ptr<Extent>> extents_;
  absl::Mutex sync_failure_mu_;
  absl::Status sync_failure_ ABSL_GUARDED_BY(sync_failure_mu_);  // The first failed fsync.

  static void MarkUnsynced(Extent& extent);
  // Syncs one extent file; a failure is remembered (sync_failure_) and returned from now on.
  absl::Status SyncExtent(Extent& extent);
  // The descriptor of the extent file holding [offset_bytes, +length_bytes), and the offset in
  // it; -1 when the range spans two extents or the file has no descriptor.
  int Descriptor(uint64_t offset_bytes, uint64_t length_bytes, uint64_t& in_extent) const;
};

}  // namespace strata::volume
