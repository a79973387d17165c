// MemEnv: files as sparse maps of 4 KiB pages, so a thin 1 TiB head costs only what is written.

#include <algorithm>
#include <cstring>
#include <map>
#include <set>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "strata/env.h"

namespace strata {
namespace {

inline constexpr uint64_t kMemPageBytes = 4096;

class MemFileData {
 public:
  absl::Status Read(uint64_t offset, std::span<std::byte> out) {
    absl::MutexLock lock(&mu_);
    for (size_t done = 0; done < out.size();) {
      const uint64_t pos = offset + done;
      const uint64_t page = pos / kMemPageBytes;
      const size_t in_page = pos % kMemPageBytes;
      const size_t n = std::min<size_t>(kMemPageBytes - in_page, out.size() - done);
      auto it = pages_.find(page);
      if (it == pages_.end() || pos >= size_) {
        std::memset(out.data() + done, 0, n);
      } else {
        std::memcpy(out.data() + done, it->second.data() + in_page, n);
      }
      done += n;
    }
    return absl::OkStatus();
  }

  absl::Status Write(uint64_t offset, std::span<const std::byte> data) {
    absl::MutexLock lock(&mu_);
    for (size_t done = 0; done < data.size();) {
      const uint64_t pos = offset + done;
      const uint64_t page = pos / kMemPageBytes;
      const size_t in_page = pos % kMemPageBytes;
      const size_t n = std::min<size_t>(kMemPageBytes - in_page, data.size() - done);
      auto& bytes = pages_[page];
      if (bytes.empty()) bytes.assign(kMemPageBytes, std::byte{0});
      std::memcpy(bytes.data() + in_page, data.data() + done, n);
      done += n;
    }
    size_ = std::max<uint64_t>(size_, offset + data.size());
    return absl::OkStatus();
  }

  uint64_t Size() {
    absl::MutexLock lock(&mu_);
    return size_;
  }

  void Truncate(uint64_t size) {
    absl::MutexLock lock(&mu_);
    if (size < size_) {
      ZeroRangeLocked(size, size_ - size);
    }
    size_ = size;
  }

  void PunchHole(uint64_t offset, uint64_t length) {
    absl::MutexLock lock(&mu_);
    ZeroRangeLocked(offset, length);
  }

 private:
  void ZeroRangeLocked(uint64_t offset, uint64_t length) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const uint64_t end = offset + length;
    for (auto it = pages_.lower_bound(offset / kMemPageBytes);
         it != pages_.end() && it->first * kMemPageBytes < end;) {
      const uint64_t page_start = it->first * kMemPageBytes;
      const uint64_t from = std::max(offset, page_start);
      const uint64_t to = std::min(end, page_start + kMemPageBytes);
      if (from == page_start && to == page_start + kMemPageBytes) {
        it = pages_.erase(it);
      } else {
        std::memset(it->second.data() + (from - page_start), 0, to - from);
        ++it;
      }
    }
  }

  absl::Mutex mu_;
  uint64_t size_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<uint64_t, std::vector<std::byte>> pages_ ABSL_GUARDED_BY(mu_);
};

class MemFile final : public File {
 public:
  explicit MemFile(std::shared_ptr<MemFileData> data) : data_(std::move(data)) {}
  absl::Status Read(uint64_t offset_bytes, std::span<std::byte> out) override {
    return data_->Read(offset_bytes, out);
  }
  absl::Status Write(uint64_t offset_bytes, std::span<const std::byte> data) override {
    return data_->Write(offset_bytes, data);
  }
  absl::Status Sync() override { return absl::OkStatus(); }
  absl::StatusOr<uint64_t> Size() override { return data_->Size(); }
  absl::Status Truncate(uint64_t size_bytes) override {
    data_->Truncate(size_bytes);
    return absl::OkStatus();
  }
  absl::Status PunchHole(uint64_t offset_bytes, uint64_t length_bytes) override {
    data_->PunchHole(offset_bytes, length_bytes);
    return absl::OkStatus();
  }

 private:
  const std::shared_ptr<MemFileData> data_;
};

class MemEnv;

class MemFileLock final : public FileLock {
 public:
  MemFileLock(MemEnv* env, std::string path) : env_(env), path_(std::move(path)) {}
  ~MemFileLock() override;

 private:
  MemEnv* const env_;
  const std::string path_;
};

class MemEnv final : public Env {
 public:
  absl::StatusOr<std::unique_ptr<File>> OpenFile(const std::string& path, bool create) override {
    absl::MutexLock lock(&mu_);
    auto it = files_.find(path);
    if (it == files_.end()) {
      if (!create) return absl::NotFoundError(absl::StrCat("open ", path, ": no such file"));
      it = files_.emplace(path, std::make_shared<MemFileData>()).first;
    }
    return std::make_unique<MemFile>(it->second);
  }
  absl::Status DeleteFile(const std::string& path) override {
    absl::MutexLock lock(&mu_);
    if (files_.erase(path) == 0) return absl::NotFoundError(absl::StrCat("delete ", path));
    return absl::OkStatus();
  }
  absl::Status RenameFile(const std::string& from, const std::string& to) override {
    absl::MutexLock lock(&mu_);
    auto it = files_.find(from);
    if (it == files_.end()) return absl::NotFoundError(absl::StrCat("rename ", from));
    auto data = it->second;
    files_.erase(it);
    files_[to] = std::move(data);
    return absl::OkStatus();
  }
  bool FileExists(const std::string& path) override {
    absl::MutexLock lock(&mu_);
    return files_.contains(path) || dirs_.contains(path);
  }
  absl::Status CreateDirs(const std::string& path) override {
    absl::MutexLock lock(&mu_);
    dirs_.insert(path);
    return absl::OkStatus();
  }
  absl::StatusOr<std::vector<std::string>> ListDir(const std::string& path) override {
    absl::MutexLock lock(&mu_);
    const std::string prefix = path + "/";
    std::vector<std::string> names;
    for (const auto& [name, data] : files_) {
      if (name.starts_with(prefix) && name.find('/', prefix.size()) == std::string::npos) {
        names.push_back(name.substr(prefix.size()));
      }
    }
    return names;
  }
  absl::Status SyncDir(const std::string&) override { return absl::OkStatus(); }
  absl::StatusOr<std::unique_ptr<FileLock>> LockFile(const std::string& path) override {
    absl::MutexLock lock(&mu_);
    if (!locks_.insert(path).second) {
      return absl::FailedPreconditionError(
          absl::StrCat(path, " is locked: another process has this store open"));
    }
    return std::make_unique<MemFileLock>(this, path);
  }
  uint64_t NowMicros() override { return Env::Default()->NowMicros(); }

  void Unlock(const std::string& path) {
    absl::MutexLock lock(&mu_);
    locks_.erase(path);
  }

 private:
  absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<MemFileData>> files_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> dirs_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> locks_ ABSL_GUARDED_BY(mu_);
};

MemFileLock::~MemFileLock() { env_->Unlock(path_); }

}  // namespace

std::unique_ptr<Env> NewMemEnv() { return std::make_unique<MemEnv>(); }

}  // namespace strata
