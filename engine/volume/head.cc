#include "volume/head.h"

#include <fcntl.h>

#include <cerrno>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "io/errno.h"
#include "util/status_macros.h"

namespace strata::volume {

std::string FileHead::ExtentPath(size_t index) const {
  return absl::StrCat(base_path_, ".", index, ".head");
}

bool FileHead::ParseFileName(const std::string& name, std::string& volume_id) {
  std::vector<std::string> parts = absl::StrSplit(name, '.');
  size_t index = 0;
  if (parts.size() != 3 || parts[2] != "head" || !absl::SimpleAtoi(parts[1], &index)) return false;
  volume_id = parts[0];
  return true;
}

absl::StatusOr<std::unique_ptr<Head>> FileHead::Open(Env* env, std::string base_path,
                                                     uint64_t size_bytes, bool create) {
  std::unique_ptr<FileHead> head(new FileHead(env, std::move(base_path)));
  STRATA_ASSIGN_OR_RETURN(const size_t count, head->ExtentsFor(size_bytes));
  while (head->extent_count_.load(std::memory_order_relaxed) < count) {
    STRATA_RETURN_IF_ERROR(head->AddExtent(create));
  }
  if (create) {
    STRATA_RETURN_IF_ERROR(head->Grow(size_bytes));
  } else {
    head->size_bytes_ = size_bytes;
  }
  return head;
}

absl::Status FileHead::Delete(Env* env, const std::string& base_path) {
  FileHead names(env, base_path);
  absl::Status status;
  for (size_t i = 0; env->FileExists(names.ExtentPath(i)); ++i) {
    if (absl::Status s = env->DeleteFile(names.ExtentPath(i)); !s.ok()) status = s;
  }
  return status;
}

absl::StatusOr<size_t> FileHead::ExtentsFor(uint64_t size_bytes) const {
  if (size_bytes > kMaxVolumeSizeBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(base_path_, ": a head holds at most ", kMaxVolumeSizeBytes, " bytes"));
  }
  return static_cast<size_t>((size_bytes + kHeadExtentBytes - 1) / kHeadExtentBytes);
}

absl::Status FileHead::AddExtent(bool create) {
  const size_t index = extent_count_.load(std::memory_order_relaxed);
  STRATA_CHECK(index < kMaxExtents);
  auto extent = std::make_unique<Extent>();
  STRATA_ASSIGN_OR_RETURN(extent->file, env_->OpenFile(ExtentPath(index), create));
  extents_[index] = std::move(extent);
  extent_count_.store(index + 1, std::memory_order_release);
  return absl::OkStatus();
}

FileHead::Extent& FileHead::ExtentAt(size_t index) const {
  STRATA_CHECK(index < extent_count_.load(std::memory_order_acquire));
  return *extents_[index];
}

template <typename Fn>
absl::Status FileHead::ForEachExtent(uint64_t offset_bytes, uint64_t length_bytes, Fn fn) {
  for (uint64_t pos = offset_bytes; pos < offset_bytes + length_bytes;) {
    const size_t index = static_cast<size_t>(pos / kHeadExtentBytes);
    const uint64_t in_extent = pos % kHeadExtentBytes;
    const uint64_t n = std::min(kHeadExtentBytes - in_extent, offset_bytes + length_bytes - pos);
    STRATA_RETURN_IF_ERROR(fn(ExtentAt(index), in_extent, pos - offset_bytes, n));
    pos += n;
  }
  return absl::OkStatus();
}

absl::Status FileHead::Read(uint64_t offset_bytes, std::span<std::byte> out) {
  return ForEachExtent(offset_bytes, out.size(),
                       [&](Extent& e, uint64_t at, uint64_t start, uint64_t n) {
                         return e.file->Read(at, out.subspan(start, n));
                       });
}

absl::Status FileHead::Write(uint64_t offset_bytes, std::span<const std::byte> data) {
  return ForEachExtent(offset_bytes, data.size(),
                       [&](Extent& e, uint64_t at, uint64_t start, uint64_t n) {
                         const absl::Status s = e.file->Write(at, data.subspan(start, n));
                         MarkUnsynced(e);
                         return s;
                       });
}

int FileHead::Descriptor(uint64_t offset_bytes, uint64_t length_bytes, uint64_t& in_extent) const {
  const size_t index = static_cast<size_t>(offset_bytes / kHeadExtentBytes);
  in_extent = offset_bytes % kHeadExtentBytes;
  if (in_extent + length_bytes > kHeadExtentBytes ||
      index >= extent_count_.load(std::memory_order_acquire)) {
    return -1;
  }
  return extents_[index]->file->native_handle();
}

bool FileHead::QueueRead(uint64_t offset_bytes, std::span<std::byte> out, IoRing& ring,
                         IoRing::Op* op) {
  uint64_t at = 0;
  const int fd = Descriptor(offset_bytes, out.size(), at);
  return fd >= 0 && ring.QueueRead(fd, out, at, op);
}

bool FileHead::QueueWrite(uint64_t offset_bytes, std::span<const std::byte> data, IoRing& ring,
                          IoRing::Op* op) {
  uint64_t at = 0;
  const int fd = Descriptor(offset_bytes, data.size(), at);
  return fd >= 0 && ring.QueueWrite(fd, data, at, op);
}

void FileHead::NoteWritten(uint64_t offset_bytes) {
  MarkUnsynced(ExtentAt(static_cast<size_t>(offset_bytes / kHeadExtentBytes)));
}

bool FileHead::CanSplice(uint64_t offset_bytes, uint64_t length_bytes) const {
  uint64_t at = 0;
  return Descriptor(offset_bytes, length_bytes, at) >= 0;
}

absl::Status FileHead::SpliceWrite(uint64_t offset_bytes, int pipe_fd, uint64_t length_bytes) {
  uint64_t at = 0;
  const int fd = Descriptor(offset_bytes, length_bytes, at);
  if (fd < 0) return absl::FailedPreconditionError("the head cannot splice this range");
  auto file_offset = static_cast<loff_t>(at);
  uint64_t left = length_bytes;
  absl::Status status;
  while (left > 0) {
    const ssize_t moved = ::splice(pipe_fd, nullptr, fd, &file_offset, left, SPLICE_F_MOVE);
    if (moved > 0) {
      left -= static_cast<uint64_t>(moved);
      continue;
    }
    if (moved < 0 && errno == EINTR) continue;
    status =
        moved == 0 || errno == EAGAIN
            ? absl::InternalError("the pipe ran dry before the write's end")
            : io::ErrnoToStatus(
                  errno, absl::StrCat("splice into ", ExtentPath(offset_bytes / kHeadExtentBytes)));
    break;
  }
  MarkUnsynced(ExtentAt(static_cast<size_t>(offset_bytes / kHeadExtentBytes)));
  return status;
}

void FileHead::MarkUnsynced(Extent& extent) {
  // After the bytes reached the file: a Sync racing with the write may have cleared the flag
  // before they did, and the write's caller is answered only after this, so a Sync it asks
  // for later syncs the extent again.
  extent.unsynced.store(true, std::memory_order_release);
}

absl::Status FileHead::PunchHole(uint64_t offset_bytes, uint64_t length_bytes) {
  return ForEachExtent(offset_bytes, length_bytes,
                       [&](Extent& e, uint64_t at, uint64_t, uint64_t n) {
                         const absl::Status s = e.file->PunchHole(at, n);
                         MarkUnsynced(e);
                         return s;
                       });
}

absl::Status FileHead::Sync() {
  {
    absl::MutexLock lock(&sync_failure_mu_);
    if (!sync_failure_.ok()) return sync_failure_;
  }
  const size_t count = extent_count_.load(std::memory_order_acquire);
  for (size_t i = 0; i < count; ++i) {
    Extent& e = *extents_[i];
    if (!e.unsynced.exchange(false, std::memory_order_acq_rel)) continue;
    if (absl::Status s = SyncExtent(e); !s.ok()) {
      e.unsynced.store(true);
      return s;
    }
  }
  return absl::OkStatus();
}

absl::Status FileHead::SyncExtent(Extent& extent) {
  absl::Status s = extent.file->Sync();
  if (s.ok()) return s;
  absl::MutexLock lock(&sync_failure_mu_);
  if (sync_failure_.ok()) {
    sync_failure_ = absl::DataLossError(
        absl::StrCat(s.message(), "; writes since the last successful flush may be lost, and ",
                     "no later flush can be trusted until the store reopens (restart stratad)"));
  }
  return sync_failure_;
}

absl::Status FileHead::Grow(uint64_t size_bytes) {
  STRATA_ASSIGN_OR_RETURN(const size_t count, ExtentsFor(size_bytes));
  while (extent_count_.load(std::memory_order_relaxed) < count) {
    STRATA_RETURN_IF_ERROR(AddExtent(/*create=*/true));
  }
  for (size_t i = 0; i < count; ++i) {
    const uint64_t extent_size = std::min(kHeadExtentBytes, size_bytes - i * kHeadExtentBytes);
    STRATA_ASSIGN_OR_RETURN(uint64_t current, extents_[i]->file->Size());
    if (current < extent_size) {
      STRATA_RETURN_IF_ERROR(extents_[i]->file->Truncate(extent_size));
      STRATA_RETURN_IF_ERROR(SyncExtent(*extents_[i]));
    }
  }
  const size_t slash = base_path_.rfind('/');
  STRATA_RETURN_IF_ERROR(env_->SyncDir(base_path_.substr(0, slash)));
  size_bytes_ = size_bytes;
  return absl::OkStatus();
}

}  // namespace strata::volume
