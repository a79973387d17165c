// ArchiveStore over a directory: one file per object, written as a temporary file that is
// synced, renamed over the object and made durable by a sync of the directory.
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "archive/archive_store.h"
#include "util/status_macros.h"

namespace strata::archive {
namespace {

constexpr absl::string_view kTmpSuffix = ".tmp";

class DirectoryArchive final : public ArchiveStore {
 public:
  DirectoryArchive(Env* env, std::string dir) : env_(env), dir_(std::move(dir)) {}

  absl::Status Put(const std::string& name, absl::string_view data) override {
    STRATA_RETURN_IF_ERROR(CheckName(name));
    STRATA_RETURN_IF_ERROR(env_->CreateDirs(dir_));
    const std::string tmp = absl::StrCat(Path(name), kTmpSuffix);
    {
      STRATA_ASSIGN_OR_RETURN(std::unique_ptr<File> file, env_->OpenFile(tmp, /*create=*/true));
      STRATA_RETURN_IF_ERROR(file->Truncate(0));
      STRATA_RETURN_IF_ERROR(
          file->Write(0, {reinterpret_cast<const std::byte*>(data.data()), data.size()}));
      STRATA_RETURN_IF_ERROR(file->Sync());
    }
    STRATA_RETURN_IF_ERROR(env_->RenameFile(tmp, Path(name)));
    return env_->SyncDir(dir_);
  }

  absl::StatusOr<std::string> Get(const std::string& name) override {
    STRATA_RETURN_IF_ERROR(CheckName(name));
    absl::StatusOr<std::unique_ptr<File>> file = env_->OpenFile(Path(name), /*create=*/false);
    if (absl::IsNotFound(file.status())) {
      return absl::NotFoundError(absl::StrCat("archive ", Describe(), ": no object ", name));
    }
    STRATA_RETURN_IF_ERROR(file.status());
    STRATA_ASSIGN_OR_RETURN(const uint64_t size, (*file)->Size());
    std::string data(size, '\0');
    STRATA_RETURN_IF_ERROR(
        (*file)->Read(0, {reinterpret_cast<std::byte*>(data.data()), data.size()}));
    return data;
  }

  absl::Status Delete(const std::string& name) override {
    STRATA_RETURN_IF_ERROR(CheckName(name));
    if (!env_->FileExists(Path(name))) return absl::OkStatus();
    STRATA_RETURN_IF_ERROR(env_->DeleteFile(Path(name)));
    return env_->SyncDir(dir_);
  }

  absl::StatusOr<std::vector<std::string>> List(const std::string& prefix) override {
    if (!env_->FileExists(dir_)) return std::vector<std::string>{};
    STRATA_ASSIGN_OR_RETURN(std::vector<std::string> names, env_->ListDir(dir_));
    std::erase_if(names, [&](const std::string& n) { return !absl::StartsWith(n, prefix); });
    return names;  // Temporary files of interrupted writes too: Delete removes them.
  }

  std::string Describe() const override { return absl::StrCat("directory ", dir_); }

 private:
  std::string Path(const std::string& name) const { return absl::StrCat(dir_, "/", name); }
  static absl::Status CheckName(const std::string& name) {
    if (name.empty() || name.find('/') != std::string::npos || name[0] == '.') {
      return absl::InvalidArgumentError(absl::StrCat("bad archive object name \"", name, "\""));
    }
    return absl::OkStatus();
  }

  Env* const env_;
  const std::string dir_;
};

}  // namespace

std::unique_ptr<ArchiveStore> NewDirectoryArchive(Env* env, std::string dir) {
  return std::make_unique<DirectoryArchive>(env, std::move(dir));
}

}  // namespace strata::archive
