// A rocksdb::FileSystem over strata::Env. Every call RocksDB makes on the catalog's files becomes
// one Env call (or two: an open and the call), so the Env's faults and crashes reach them.

#include "meta/env_file_system.h"

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <span>

#include "absl/strings/str_cat.h"
#include "util/log.h"

namespace strata::meta {
namespace {

using rocksdb::FileOptions;
using rocksdb::IODebugContext;
using rocksdb::IOOptions;
using rocksdb::IOStatus;
using rocksdb::Slice;

IOStatus ToIo(const absl::Status& s) {
  if (s.ok()) return IOStatus::OK();
  const std::string message(s.message());
  if (absl::IsNotFound(s)) return IOStatus::PathNotFound(message);
  if (absl::IsResourceExhausted(s)) return IOStatus::NoSpace(message);
  return IOStatus::IOError(message);
}

std::span<std::byte> Bytes(char* p, size_t n) { return {reinterpret_cast<std::byte*>(p), n}; }

// Reads at most `n` bytes at `offset`, stopping at the file's end as RocksDB expects.
IOStatus ReadUpTo(File& file, uint64_t offset, size_t n, Slice* result, char* scratch) {
  absl::StatusOr<uint64_t> size = file.Size();
  if (!size.ok()) return ToIo(size.status());
  const size_t len =
      offset >= *size ? 0 : static_cast<size_t>(std::min<uint64_t>(n, *size - offset));
  if (len > 0) {
    if (IOStatus s = ToIo(file.Read(offset, Bytes(scratch, len))); !s.ok()) return s;
  }
  *result = Slice(scratch, len);
  return IOStatus::OK();
}

class EnvSequentialFile final : public rocksdb::FSSequentialFile {
 public:
  explicit EnvSequentialFile(std::unique_ptr<File> file) : file_(std::move(file)) {}
  IOStatus Read(size_t n, const IOOptions&, Slice* result, char* scratch,
                IODebugContext*) override {
    IOStatus s = ReadUpTo(*file_, offset_, n, result, scratch);
    if (s.ok()) offset_ += result->size();
    return s;
  }
  IOStatus PositionedRead(uint64_t offset, size_t n, const IOOptions&, Slice* result, char* scratch,
                          IODebugContext*) override {
    return ReadUpTo(*file_, offset, n, result, scratch);
  }
  IOStatus Skip(uint64_t n) override {
    offset_ += n;
    return IOStatus::OK();
  }

 private:
  const std::unique_ptr<File> file_;
  uint64_t offset_ = 0;
};

class EnvRandomAccessFile final : public rocksdb::FSRandomAccessFile {
 public:
  explicit EnvRandomAccessFile(std::unique_ptr<File> file) : file_(std::move(file)) {}
  IOStatus Read(uint64_t offset, size_t n, const IOOptions&, Slice* result, char* scratch,
                IODebugContext*) const override {
    return ReadUpTo(*file_, offset, n, result, scratch);
  }

 private:
  const std::unique_ptr<File> file_;
};

class EnvWritableFile final : public rocksdb::FSWritableFile {
 public:
  EnvWritableFile(std::unique_ptr<File> file, uint64_t size, const FileOptions& options)
      : rocksdb::FSWritableFile(options), file_(std::move(file)), size_(size) {}

  IOStatus Append(const Slice& data, const IOOptions&, IODebugContext*) override {
    if (file_ == nullptr) return IOStatus::IOError("append to a closed file");
    IOStatus s = ToIo(file_->Write(
        size_, std::span(reinterpret_cast<const std::byte*>(data.data()), data.size())));
    if (s.ok()) size_ += data.size();
    return s;
  }
  IOStatus Append(const Slice& data, const IOOptions& options, const rocksdb::DataVerificationInfo&,
                  IODebugContext* dbg) override {
    return Append(data, options, dbg);
  }
  IOStatus Truncate(uint64_t size, const IOOptions&, IODebugContext*) override {
    if (file_ == nullptr) return IOStatus::IOError("truncate of a closed file");
    IOStatus s = ToIo(file_->Truncate(size));
    if (s.ok()) size_ = size;
    return s;
  }
  IOStatus Close(const IOOptions&, IODebugContext*) override {
    file_.reset();
    return IOStatus::OK();
  }
  IOStatus Flush(const IOOptions&, IODebugContext*) override { return IOStatus::OK(); }
  IOStatus Sync(const IOOptions&, IODebugContext*) override {
    if (file_ == nullptr) return IOStatus::OK();  // Closed files were synced before closing.
    return ToIo(file_->Sync());
  }
  IOStatus Fsync(const IOOptions& options, IODebugContext* dbg) override {
    return Sync(options, dbg);
  }
  bool IsSyncThreadSafe() const override { return true; }
  uint64_t GetFileSize(const IOOptions&, IODebugContext*) override { return size_; }

 private:
  std::unique_ptr<File> file_;
  uint64_t size_;
};

class EnvDirectory final : public rocksdb::FSDirectory {
 public:
  EnvDirectory(Env* env, std::string path) : env_(env), path_(std::move(path)) {}
  IOStatus Fsync(const IOOptions&, IODebugContext*) override { return ToIo(env_->SyncDir(path_)); }
  IOStatus Close(const IOOptions&, IODebugContext*) override { return IOStatus::OK(); }

 private:
  Env* const env_;
  const std::string path_;
};

class EnvLock final : public rocksdb::FileLock {
 public:
  explicit EnvLock(std::unique_ptr<strata::FileLock> lock) : lock_(std::move(lock)) {}

 private:
  std::unique_ptr<strata::FileLock> lock_;
};

// RocksDB's info log, warnings and errors only, to Strata's log (not a file in the Env, whose
// writes would count as the catalog's and shift the faults a test enumerates).
class WarningLogger final : public rocksdb::Logger {
 public:
  WarningLogger() : rocksdb::Logger(rocksdb::InfoLogLevel::WARN_LEVEL) {}
  using rocksdb::Logger::Logv;
  void Logv(const char* format, va_list ap) override {
    Logv(rocksdb::InfoLogLevel::WARN_LEVEL, format, ap);
  }
  void Logv(const rocksdb::InfoLogLevel level, const char* format, va_list ap) override {
    if (level < GetInfoLogLevel()) return;
    char line[512];
    std::vsnprintf(line, sizeof(line), format, ap);
    STRATA_LOG(kWarning, "catalog (rocksdb): ", line);
  }
};

class EnvFileSystem final : public rocksdb::FileSystem {
 public:
  EnvFileSystem(Env* env, std::shared_ptr<LastIoError> last_error)
      : env_(env), last_error_(std::move(last_error)) {}
  const char* Name() const override { return "StrataEnvFileSystem"; }

  IOStatus NewSequentialFile(const std::string& path, const FileOptions&,
                             std::unique_ptr<rocksdb::FSSequentialFile>* result,
                             IODebugContext*) override {
    absl::StatusOr<std::unique_ptr<File>> file = env_->OpenFile(path, false);
    if (!file.ok()) return Io(file.status());
    *result = std::make_unique<EnvSequentialFile>(std::move(*file));
    return IOStatus::OK();
  }
  IOStatus NewRandomAccessFile(const std::string& path, const FileOptions&,
                               std::unique_ptr<rocksdb::FSRandomAccessFile>* result,
                               IODebugContext*) override {
    absl::StatusOr<std::unique_ptr<File>> file = env_->OpenFile(path, false);
    if (!file.ok()) return Io(file.status());
    *result = std::make_unique<EnvRandomAccessFile>(std::move(*file));
    return IOStatus::OK();
  }
  IOStatus NewWritableFile(const std::string& path, const FileOptions& options,
                           std::unique_ptr<rocksdb::FSWritableFile>* result,
                           IODebugContext*) override {
    absl::StatusOr<std::unique_ptr<File>> file = env_->OpenFile(path, true);
    if (!file.ok()) return Io(file.status());
    if (IOStatus s = Io((*file)->Truncate(0)); !s.ok()) return s;
    *result = std::make_unique<EnvWritableFile>(std::move(*file), 0, options);
    return IOStatus::OK();
  }
  IOStatus ReopenWritableFile(const std::string& path, const FileOptions& options,
                              std::unique_ptr<rocksdb::FSWritableFile>* result,
                              IODebugContext*) override {
    absl::StatusOr<std::unique_ptr<File>> file = env_->OpenFile(path, true);
    if (!file.ok()) return Io(file.status());
    absl::StatusOr<uint64_t> size = (*file)->Size();
    if (!size.ok()) return Io(size.status());
    *result = std::make_unique<EnvWritableFile>(std::move(*file), *size, options);
    return IOStatus::OK();
  }
  IOStatus ReuseWritableFile(const std::string& path, const std::string& old_path,
                             const FileOptions& options,
                             std::unique_ptr<rocksdb::FSWritableFile>* result,
                             IODebugContext* dbg) override {
    if (IOStatus s = Io(env_->RenameFile(old_path, path)); !s.ok()) return s;
    return NewWritableFile(path, options, result, dbg);
  }
  IOStatus NewDirectory(const std::string& path, const IOOptions&,
                        std::unique_ptr<rocksdb::FSDirectory>* result, IODebugContext*) override {
    *result = std::make_unique<EnvDirectory>(env_, path);
    return IOStatus::OK();
  }
  IOStatus FileExists(const std::string& path, const IOOptions&, IODebugContext*) override {
    return env_->FileExists(path) ? IOStatus::OK() : IOStatus::NotFound(path);
  }
  IOStatus GetChildren(const std::string& dir, const IOOptions&, std::vector<std::string>* result,
                       IODebugContext*) override {
    absl::StatusOr<std::vector<std::string>> names = env_->ListDir(dir);
    if (!names.ok()) return Io(names.status());
    *result = std::move(*names);
    return IOStatus::OK();
  }
  IOStatus DeleteFile(const std::string& path, const IOOptions&, IODebugContext*) override {
    return Io(env_->DeleteFile(path));
  }
  IOStatus Truncate(const std::string& path, size_t size, const IOOptions&,
                    IODebugContext*) override {
    absl::StatusOr<std::unique_ptr<File>> file = env_->OpenFile(path, false);
    if (!file.ok()) return Io(file.status());
    return Io((*file)->Truncate(size));
  }
  IOStatus CreateDir(const std::string& path, const IOOptions&, IODebugContext*) override {
    return Io(env_->CreateDirs(path));
  }
  IOStatus CreateDirIfMissing(const std::string& path, const IOOptions&, IODebugContext*) override {
    return Io(env_->CreateDirs(path));
  }
  // The catalog never removes a directory (RocksDB would only for an archive or DestroyDB).
  IOStatus DeleteDir(const std::string& path, const IOOptions&, IODebugContext*) override {
    return IOStatus::NotSupported(absl::StrCat("delete directory ", path));
  }
  IOStatus GetFileSize(const std::string& path, const IOOptions&, uint64_t* size,
                       IODebugContext*) override {
    absl::StatusOr<std::unique_ptr<File>> file = env_->OpenFile(path, false);
    if (!file.ok()) return Io(file.status());
    absl::StatusOr<uint64_t> bytes = (*file)->Size();
    if (!bytes.ok()) return Io(bytes.status());
    *size = *bytes;
    return IOStatus::OK();
  }
  IOStatus GetFileModificationTime(const std::string& path, const IOOptions&, uint64_t*,
                                   IODebugContext*) override {
    return IOStatus::NotSupported(absl::StrCat("modification time of ", path));
  }
  IOStatus RenameFile(const std::string& from, const std::string& to, const IOOptions&,
                      IODebugContext*) override {
    return Io(env_->RenameFile(from, to));
  }
  IOStatus LockFile(const std::string& path, const IOOptions&, rocksdb::FileLock** lock,
                    IODebugContext*) override {
    absl::StatusOr<std::unique_ptr<strata::FileLock>> held = env_->LockFile(path);
    if (!held.ok()) return Io(held.status());
    *lock = new EnvLock(std::move(*held));
    return IOStatus::OK();
  }
  IOStatus UnlockFile(rocksdb::FileLock* lock, const IOOptions&, IODebugContext*) override {
    delete lock;
    return IOStatus::OK();
  }
  IOStatus GetTestDirectory(const IOOptions&, std::string* path, IODebugContext*) override {
    *path = "/tmp";
    return IOStatus::OK();
  }
  IOStatus NewLogger(const std::string&, const IOOptions&, std::shared_ptr<rocksdb::Logger>* result,
                     IODebugContext*) override {
    *result = std::make_shared<WarningLogger>();
    return IOStatus::OK();
  }
  IOStatus GetAbsolutePath(const std::string& path, const IOOptions&, std::string* output,
                           IODebugContext*) override {
    *output = path;
    return IOStatus::OK();
  }
  IOStatus IsDirectory(const std::string& path, const IOOptions&, bool* is_dir,
                       IODebugContext*) override {
    // A directory lists and does not open as a file (a memory Env has no directories at all).
    *is_dir = env_->ListDir(path).ok() && !env_->OpenFile(path, false).ok();
    return IOStatus::OK();
  }

 private:
  IOStatus Io(const absl::Status& s) {
    if (!s.ok() && !absl::IsNotFound(s) && last_error_ != nullptr) last_error_->Set(s);
    return ToIo(s);
  }

  Env* const env_;
  const std::shared_ptr<LastIoError> last_error_;
};

}  // namespace

void LastIoError::Set(const absl::Status& status) {
  absl::MutexLock lock(&mu_);
  message_ = status.ToString();
}

std::string LastIoError::Get() const {
  absl::MutexLock lock(&mu_);
  return message_;
}

std::shared_ptr<rocksdb::FileSystem> NewEnvFileSystem(Env* env,
                                                      std::shared_ptr<LastIoError> last_error) {
  return std::make_shared<EnvFileSystem>(env, std::move(last_error));
}

}  // namespace strata::meta
