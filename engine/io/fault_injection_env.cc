// FaultInjectionEnv keeps an undo image per file: the first write to a page after a Sync saves
// the page's synced content, so Crash() can put it back. Sync discards the undo image.

#include "strata/fault_injection_env.h"

#include <random>
#include <set>

#include "absl/strings/str_cat.h"

namespace strata {
namespace {

inline constexpr uint64_t kUndoPageBytes = 4096;
inline constexpr uint64_t kSectorBytes = 512;

std::string ParentDir(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

}  // namespace

class FaultFile final : public File {
 public:
  FaultFile(FaultInjectionEnv* env, std::string path, std::unique_ptr<File> base)
      : env_(env), path_(std::move(path)), base_(std::move(base)) {}

  absl::Status Read(uint64_t offset_bytes, std::span<std::byte> out) override {
    if (absl::Status s = env_->MaybeFail(); !s.ok()) return s;
    return base_->Read(offset_bytes, out);
  }
  absl::Status Write(uint64_t offset_bytes, std::span<const std::byte> data) override {
    bool short_write = false;
    if (absl::Status s = env_->MaybeFail(&short_write); !s.ok()) {
      if (short_write && data.size() > kSectorBytes) {
        const size_t prefix = data.size() / 2 / kSectorBytes * kSectorBytes;
        env_->SaveUndo(path_, *base_, offset_bytes, prefix, false);
        (void)base_->Write(offset_bytes, data.first(prefix));
      }
      return s;
    }
    env_->SaveUndo(path_, *base_, offset_bytes, data.size(), false);
    return base_->Write(offset_bytes, data);
  }
  absl::Status Sync() override {
    if (absl::Status s = env_->MaybeFail(); !s.ok()) {
      env_->MarkSyncFailed(path_);
      return s;
    }
    if (absl::Status s = base_->Sync(); !s.ok()) return s;
    env_->MarkSynced(path_, base_->Size().value_or(0));
    return absl::OkStatus();
  }
  absl::StatusOr<uint64_t> Size() override {
    if (absl::Status s = env_->MaybeFail(); !s.ok()) return s;
    return base_->Size();
  }
  absl::Status Truncate(uint64_t size_bytes) override {
    if (absl::Status s = env_->MaybeFail(); !s.ok()) return s;
    absl::StatusOr<uint64_t> size = base_->Size();
    if (!size.ok()) return size.status();
    if (size_bytes < *size) env_->SaveUndo(path_, *base_, size_bytes, *size - size_bytes, false);
    env_->SaveUndo(path_, *base_, 0, 0, false);  // Records the synced size.
    return base_->Truncate(size_bytes);
  }
  absl::Status PunchHole(uint64_t offset_bytes, uint64_t length_bytes) override {
    if (absl::Status s = env_->MaybeFail(); !s.ok()) return s;
    env_->SaveUndo(path_, *base_, offset_bytes, length_bytes, true);
    return base_->PunchHole(offset_bytes, length_bytes);
  }

 private:
  FaultInjectionEnv* const env_;
  const std::string path_;
  const std::unique_ptr<File> base_;
};

FaultInjectionEnv::FaultInjectionEnv(Env* base) : base_(base) {}
FaultInjectionEnv::~FaultInjectionEnv() = default;

void FaultInjectionEnv::FailAfter(int64_t n, absl::Status status) {
  InjectAt(n, Fault{.status = std::move(status)});
}

void FaultInjectionEnv::InjectAt(int64_t n, Fault fault) {
  absl::MutexLock lock(&mu_);
  fail_countdown_ = n;
  fault_ = std::move(fault);
}

int64_t FaultInjectionEnv::operations() const {
  absl::MutexLock lock(&mu_);
  return operations_;
}

void FaultInjectionEnv::ClearFaults() {
  absl::MutexLock lock(&mu_);
  fail_countdown_ = -1;
}

absl::Status FaultInjectionEnv::MaybeFail(bool* short_write) {
  absl::MutexLock lock(&mu_);
  ++operations_;
  if (fail_countdown_ < 0) return absl::OkStatus();
  if (fail_countdown_ == 0) {
    if (short_write != nullptr) *short_write = fault_.short_write;
    if (fault_.transient) fail_countdown_ = -1;
    return fault_.status;
  }
  --fail_countdown_;
  return absl::OkStatus();
}

void FaultInjectionEnv::MarkSyncFailed(const std::string& path) {
  absl::MutexLock lock(&mu_);
  auto it = files_.find(path);
  if (it == files_.end()) return;
  // The kernel forgets the dirty pages (they stay in the cache, clean, and are never written):
  // only a new write of a page can make it durable again.
  it->second.lost_pages.merge(it->second.undo_pages);
  it->second.undo_pages.clear();
}

void FaultInjectionEnv::SaveUndo(const std::string& path, File& base, uint64_t offset_bytes,
                                 uint64_t length_bytes, bool skip_holes) {
  absl::MutexLock lock(&mu_);
  FaultFileState& state = files_[path];
  if (!state.dirty) {
    state.dirty = true;
    state.synced_size = base.Size().value_or(0);
  }
  if (length_bytes == 0) return;
  const uint64_t first = offset_bytes / kUndoPageBytes;
  const uint64_t last = (offset_bytes + length_bytes - 1) / kUndoPageBytes;
  std::string page(kUndoPageBytes, '\0');
  for (uint64_t index = first; index <= last; ++index) {
    if (auto lost = state.lost_pages.find(index); lost != state.lost_pages.end()) {
      state.undo_pages.insert(state.lost_pages.extract(lost));
      continue;
    }
    if (state.undo_pages.contains(index)) continue;
    if (index * kUndoPageBytes >= state.synced_size) continue;  // Truncation undoes it.
    auto bytes = std::as_writable_bytes(std::span(page.data(), page.size()));
    if (!base.Read(index * kUndoPageBytes, bytes).ok()) continue;
    if (skip_holes && page.find_first_not_of('\0') == std::string::npos) continue;
    state.undo_pages.emplace(index, page);
  }
}

void FaultInjectionEnv::MarkSynced(const std::string& path, uint64_t size_bytes) {
  absl::MutexLock lock(&mu_);
  FaultFileState& state = files_[path];
  state.dirty = !state.lost_pages.empty();
  state.synced_size = size_bytes;
  state.undo_pages.clear();
}

absl::Status FaultInjectionEnv::Crash(bool tear, uint64_t seed) {
  absl::MutexLock lock(&mu_);
  std::mt19937_64 rng(seed);
  for (auto it = files_.begin(); it != files_.end();) {
    const std::string& path = it->first;
    FaultFileState& state = it->second;
    if (!state.durable_entry) {
      (void)base_->DeleteFile(path);
      it = files_.erase(it);
      continue;
    }
    if (state.dirty) {
      absl::StatusOr<std::unique_ptr<File>> file = base_->OpenFile(path, false);
      if (absl::IsNotFound(file.status())) {
        // Deleted while a write through an open handle was still being recorded (RocksDB
        // drops obsolete files from background threads): nothing of it is left to undo.
        it = files_.erase(it);
        continue;
      }
      if (!file.ok()) return file.status();
      state.undo_pages.merge(state.lost_pages);
      for (const auto& [index, bytes] : state.undo_pages) {
        for (uint64_t sector = 0; sector < kUndoPageBytes; sector += kSectorBytes) {
          // A torn crash lets each unsynced sector survive or not, as disk write-back would.
          if (tear && (rng() & 1) != 0) continue;
          auto span = std::as_bytes(std::span(bytes.data() + sector, kSectorBytes));
          if (absl::Status s = (*file)->Write(index * kUndoPageBytes + sector, span); !s.ok()) {
            return s;
          }
        }
      }
      uint64_t keep = state.synced_size;
      if (tear) {
        absl::StatusOr<uint64_t> size = (*file)->Size();
        if (size.ok() && *size > keep) keep += rng() % (*size - keep + 1);
      }
      if (absl::Status s = (*file)->Truncate(keep); !s.ok()) return s;
    }
    state = FaultFileState{};
    ++it;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<File>> FaultInjectionEnv::OpenFile(const std::string& path,
                                                                  bool create) {
  if (absl::Status s = MaybeFail(); !s.ok()) return s;
  const bool existed = base_->FileExists(path);
  absl::StatusOr<std::unique_ptr<File>> base = base_->OpenFile(path, create);
  if (!base.ok()) return base.status();
  if (!existed) {
    absl::MutexLock lock(&mu_);
    FaultFileState& state = files_[path];
    state.durable_entry = false;
    state.dirty = true;
    state.synced_size = 0;
  }
  return std::make_unique<FaultFile>(this, path, std::move(*base));
}

absl::Status FaultInjectionEnv::DeleteFile(const std::string& path) {
  if (absl::Status s = MaybeFail(); !s.ok()) return s;
  {
    absl::MutexLock lock(&mu_);
    files_.erase(path);
  }
  return base_->DeleteFile(path);
}

absl::Status FaultInjectionEnv::RenameFile(const std::string& from, const std::string& to) {
  if (absl::Status s = MaybeFail(); !s.ok()) return s;
  {
    absl::MutexLock lock(&mu_);
    auto node = files_.extract(from);
    files_.erase(to);
    if (!node.empty()) {
      node.key() = to;
      files_.insert(std::move(node));
    }
  }
  return base_->RenameFile(from, to);
}

bool FaultInjectionEnv::FileExists(const std::string& path) { return base_->FileExists(path); }
absl::Status FaultInjectionEnv::CreateDirs(const std::string& path) {
  if (absl::Status s = MaybeFail(); !s.ok()) return s;
  return base_->CreateDirs(path);
}
absl::StatusOr<std::vector<std::string>> FaultInjectionEnv::ListDir(const std::string& path) {
  if (absl::Status s = MaybeFail(); !s.ok()) return s;
  return base_->ListDir(path);
}

absl::Status FaultInjectionEnv::SyncDir(const std::string& path) {
  if (absl::Status s = MaybeFail(); !s.ok()) return s;
  if (absl::Status s = base_->SyncDir(path); !s.ok()) return s;
  absl::MutexLock lock(&mu_);
  for (auto& [file_path, state] : files_) {
    if (ParentDir(file_path) == path) state.durable_entry = true;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<FileLock>> FaultInjectionEnv::LockFile(const std::string& path) {
  if (absl::Status s = MaybeFail(); !s.ok()) return s;
  return base_->LockFile(path);
}
uint64_t FaultInjectionEnv::NowMicros() { return base_->NowMicros(); }

}  // namespace strata
