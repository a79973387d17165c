#pragma once
// A volume's head: its live data, written in place. docs/formats/layout.md (files) and
// docs/formats/rados.md (objects).

#include <array>
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
#include "strata/volume.h"

namespace strata::volume {

inline constexpr uint64_t kHeadExtentBytes = uint64_t{4} << 40;

// Where a volume's live data is written in place: extent files in the data directory
// (FileHead) or objects in the Ceph cluster (RadosHead, volume/rados_head.h). Thread-safe for
// positional I/O.
class Head {
 public:
  virtual ~Head() = default;
  [[nodiscard]] virtual absl::Status Read(uint64_t offset_bytes, std::span<std::byte> out) = 0;
  [[nodiscard]] virtual absl::Status Write(uint64_t offset_bytes,
                                           std::span<const std::byte> data) = 0;
  // Makes a range read as zeros (and frees its space where the storage can).
  [[nodiscard]] virtual absl::Status PunchHole(uint64_t offset_bytes, uint64_t length_bytes) = 0;
  // Queue a read or write in `ring` (the I/O of Read/Write, finished by `op`). False, with
  // nothing queued, when this head cannot (it has no file descriptor for the range, or the ring
  // is full): then use Read/Write.
  virtual bool QueueRead(uint64_t offset_bytes, std::span<std::byte> out, IoRing& ring,
                         IoRing::Op* op) = 0;
  virtual bool QueueWrite(uint64_t offset_bytes, std::span<const std::byte> data, IoRing& ring,
                          IoRing::Op* op) = 0;
  // A queued write at `offset_bytes` has finished: the next Sync covers it.
  virtual void NoteWritten(uint64_t offset_bytes) = 0;
  // Whether SpliceWrite can write the range (one file descriptor holds it).
  virtual bool CanSplice(uint64_t /*offset_bytes*/, uint64_t /*length_bytes*/) const {
    return false;
  }
  // Writes `length_bytes` taken from the pipe `pipe_fd` (its read end) at `offset_bytes`: the
  // kernel copies the pipe's pages into the file, with no buffer between (splice(2)). The
  // next Sync covers it. REQUIRES: CanSplice for the range, and the pipe holds the bytes.
  [[nodiscard]] virtual absl::Status SpliceWrite(uint64_t /*offset_bytes*/, int /*pipe_fd*/,
                                                 uint64_t /*length_bytes*/) {
    return absl::UnimplementedError("this head cannot splice");
  }
  // True when its reads go over the network (objects in a Ceph cluster), as ChunkStore says.
  virtual bool reads_wait_on_network() const { return false; }
  // Makes every write that returned (or was noted) before it durable. Once a write or sync has
  // failed, every later Sync fails too (kDataLoss): the head is trusted again only when reopened.
  [[nodiscard]] virtual absl::Status Sync() = 0;
  // Grows to `size_bytes`, durably. REQUIRES: exclusive use.
  [[nodiscard]] virtual absl::Status Grow(uint64_t size_bytes) = 0;
};

// A head as extent files of kHeadExtentBytes each (ext4 caps a file at 16 TiB; a volume reaches
// 64 TiB), named "<volume>.<n>.head". Sparse: unwritten ranges use no space.
class FileHead final : public Head {
 public:
  // Opens (with `create`, creates) the extent files for a `size_bytes` head named `base_path`
  // ("DIR/heads/vol-..."). `env` must outlive the Head.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Head>> Open(Env* env, std::string base_path,
                                                                  uint64_t size_bytes, bool create);
  // Deletes every extent file of the head named `base_path`.
  [[nodiscard]] static absl::Status Delete(Env* env, const std::string& base_path);
  // The file names ("vol-....<n>.head") of a head, for orphan detection.
  static bool ParseFileName(const std::string& name, std::string& volume_id);

  absl::Status Read(uint64_t offset_bytes, std::span<std::byte> out) override;
  absl::Status Write(uint64_t offset_bytes, std::span<const std::byte> data) override;
  absl::Status PunchHole(uint64_t offset_bytes, uint64_t length_bytes) override;
  bool QueueRead(uint64_t offset_bytes, std::span<std::byte> out, IoRing& ring,
                 IoRing::Op* op) override;
  bool QueueWrite(uint64_t offset_bytes, std::span<const std::byte> data, IoRing& ring,
                  IoRing::Op* op) override;
  void NoteWritten(uint64_t offset_bytes) override;
  bool CanSplice(uint64_t offset_bytes, uint64_t length_bytes) const override;
  absl::Status SpliceWrite(uint64_t offset_bytes, int pipe_fd, uint64_t length_bytes) override;
  // Syncs only extents written since the last Sync. Linux drops the dirty pages a failed fsync
  // could not write, so a later fsync that succeeds proves nothing: the failure is final.
  absl::Status Sync() override;
  absl::Status Grow(uint64_t size_bytes) override;

 private:
  FileHead(Env* env, std::string base_path) : env_(env), base_path_(std::move(base_path)) {}
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
  // Every extent a head may have. Extents are only ever added, in place, and published by
  // extent_count_: I/O that runs beside a Grow without the volume's gate (on a ring's helpers,
  // or a queued write's completion) reads a table that never moves.
  static constexpr size_t kMaxExtents = kMaxVolumeSizeBytes / kHeadExtentBytes;
  std::array<std::unique_ptr<Extent>, kMaxExtents> extents_;
  std::atomic<size_t> extent_count_{0};
  // How many extents hold `size_bytes`; kInvalidArgument past kMaxVolumeSizeBytes.
  absl::StatusOr<size_t> ExtentsFor(uint64_t size_bytes) const;
  // Opens extent `extent_count_` (creating it with `create`) and publishes it.
  absl::Status AddExtent(bool create);
  Extent& ExtentAt(size_t index) const;
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
