// PosixEnv: pread/pwrite/fdatasync on regular files, flock for store locks.

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "io/errno.h"
#include "strata/env.h"

namespace strata {
namespace {

using io::ErrnoToStatus;

class PosixFile final : public File {
 public:
  PosixFile(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  ~PosixFile() override { ::close(fd_); }
  PosixFile(const PosixFile&) = delete;
  PosixFile& operator=(const PosixFile&) = delete;

  absl::Status Read(uint64_t offset_bytes, std::span<std::byte> out) override {
    size_t done = 0;
    while (done < out.size()) {
      const ssize_t n = ::pread(fd_, out.data() + done, out.size() - done, offset_bytes + done);
      if (n < 0) {
        if (errno == EINTR) continue;
        return ErrnoToStatus(errno, absl::StrCat("read ", path_));
      }
      if (n == 0) {  // Past the end of the file: zeros.
        std::memset(out.data() + done, 0, out.size() - done);
        break;
      }
      done += static_cast<size_t>(n);
    }
    return absl::OkStatus();
  }

  absl::Status Write(uint64_t offset_bytes, std::span<const std::byte> data) override {
    size_t done = 0;
    while (done < data.size()) {
      const ssize_t n = ::pwrite(fd_, data.data() + done, data.size() - done, offset_bytes + done);
      if (n < 0) {
        if (errno == EINTR) continue;
        return ErrnoToStatus(errno, absl::StrCat("write ", path_));
      }
      done += static_cast<size_t>(n);
    }
    return absl::OkStatus();
  }

  int native_handle() const override { return fd_; }

  absl::Status Sync() override {
    if (::fdatasync(fd_) != 0) return ErrnoToStatus(errno, absl::StrCat("sync ", path_));
    return absl::OkStatus();
  }

  absl::StatusOr<uint64_t> Size() override {
    struct stat st {};
    if (::fstat(fd_, &st) != 0) return ErrnoToStatus(errno, absl::StrCat("stat ", path_));
    return static_cast<uint64_t>(st.st_size);
  }

  absl::Status Truncate(uint64_t size_bytes) override {
    if (::ftruncate(fd_, static_cast<off_t>(size_bytes)) != 0) {
      return ErrnoToStatus(errno, absl::StrCat("truncate ", path_));
    }
    return absl::OkStatus();
  }

  absl::Status PunchHole(uint64_t offset_bytes, uint64_t length_bytes) override {
    if (length_bytes == 0) return absl::OkStatus();
    if (::fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                    static_cast<off_t>(offset_bytes), static_cast<off_t>(length_bytes)) == 0) {
      return absl::OkStatus();
    }
    if (errno != EOPNOTSUPP) return ErrnoToStatus(errno, absl::StrCat("punch hole ", path_));
    // A file system without hole punching: write zeros instead, in bounded pieces.
    static constexpr size_t kZeroPieceBytes = 1 << 20;
    static const std::vector<std::byte> zeros(kZeroPieceBytes);
    for (uint64_t done = 0; done < length_bytes;) {
      const size_t n =
          static_cast<size_t>(std::min<uint64_t>(kZeroPieceBytes, length_bytes - done));
      if (absl::Status s = Write(offset_bytes + done, std::span(zeros.data(), n)); !s.ok())
        return s;
      done += n;
    }
    return absl::OkStatus();
  }

 private:
  const int fd_;
  const std::string path_;
};

class PosixFileLock final : public FileLock {
 public:
  explicit PosixFileLock(int fd) : fd_(fd) {}
  ~PosixFileLock() override { ::close(fd_); }  // Closing releases the flock.
 private:
  const int fd_;
};

class PosixEnv final : public Env {
 public:
  absl::StatusOr<std::unique_ptr<File>> OpenFile(const std::string& path, bool create) override {
    const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0), 0644);
    if (fd < 0) return ErrnoToStatus(errno, absl::StrCat("open ", path));
    return std::make_unique<PosixFile>(fd, path);
  }

  absl::Status DeleteFile(const std::string& path) override {
    if (::unlink(path.c_str()) != 0) return ErrnoToStatus(errno, absl::StrCat("delete ", path));
    return absl::OkStatus();
  }

  absl::Status RenameFile(const std::string& from, const std::string& to) override {
    if (::rename(from.c_str(), to.c_str()) != 0) {
      return ErrnoToStatus(errno, absl::StrCat("rename ", from, " to ", to));
    }
    return absl::OkStatus();
  }

  bool FileExists(const std::string& path) override { return ::access(path.c_str(), F_OK) == 0; }

  absl::Status CreateDirs(const std::string& path) override {
    std::error_code ec;
    std::filesystem::create_directories(path, ec);
    if (ec) return ErrnoToStatus(ec.value(), absl::StrCat("mkdir ", path));
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<std::string>> ListDir(const std::string& path) override {
    DIR* dir = ::opendir(path.c_str());
    if (dir == nullptr) return ErrnoToStatus(errno, absl::StrCat("list ", path));
    std::vector<std::string> names;
    while (const dirent* entry = ::readdir(dir)) {
      const absl::string_view name = entry->d_name;
      if (name != "." && name != "..") names.emplace_back(name);
    }
    ::closedir(dir);
    return names;
  }

  absl::Status SyncDir(const std::string& path) override {
    const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return ErrnoToStatus(errno, absl::StrCat("open dir ", path));
    const int rc = ::fsync(fd);
    const int saved = errno;
    ::close(fd);
    if (rc != 0) return ErrnoToStatus(saved, absl::StrCat("sync dir ", path));
    return absl::OkStatus();
  }

  absl::StatusOr<std::unique_ptr<FileLock>> LockFile(const std::string& path) override {
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return ErrnoToStatus(errno, absl::StrCat("open lock ", path));
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      const int saved = errno;
      ::close(fd);
      if (saved == EWOULDBLOCK) {
        return absl::FailedPreconditionError(
            absl::StrCat(path, " is locked: another process has this store open"));
      }
      return ErrnoToStatus(saved, absl::StrCat("lock ", path));
    }
    return std::make_unique<PosixFileLock>(fd);
  }

  uint64_t NowMicros() override {
    timeval tv{};
    ::gettimeofday(&tv, nullptr);
    return static_cast<uint64_t>(tv.tv_sec) * 1000000 + static_cast<uint64_t>(tv.tv_usec);
  }
};

}  // namespace

Env* Env::Default() {
  static PosixEnv* env = new PosixEnv();
  return env;
}

}  // namespace strata
