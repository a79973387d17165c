// The Store: a data directory holding one area per region, and the lock that keeps a second
// process out. Layout (docs/formats/layout.md):
//   DIR/LOCK                          exclusive lock (flock)
//   DIR/regions/NAME/catalog/         RocksDB catalog of the region
//   DIR/regions/NAME/heads/           volume heads, one extent file per volume
//   DIR/regions/NAME/segments/        chunk segment files

#include <filesystem>
#include <map>

#include "absl/strings/str_cat.h"
#include "strata/store.h"
#include "util/status_macros.h"
#include "volume/region_impl.h"

namespace strata {
namespace {

absl::Status ValidateRegionName(const std::string& name) {
  if (name.empty() || name.size() > 64) {
    return absl::InvalidArgumentError("a region name has 1 to 64 characters");
  }
  for (char c : name) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) {
      return absl::InvalidArgumentError(absl::StrCat(
          "region name \"", name, "\" may hold only lowercase letters, digits and '-'"));
    }
  }
  return absl::OkStatus();
}

class StoreImpl final : public Store {
 public:
  StoreImpl(std::string path, StoreOptions options, std::unique_ptr<FileLock> lock)
      : path_(std::move(path)), options_(std::move(options)), lock_(std::move(lock)) {}

  ~StoreImpl() override {
    regions_.clear();  // Each region stops cleanly before the lock is released.
  }

  absl::Status OpenExisting() {
    std::error_code ec;
    const std::filesystem::path dir = std::filesystem::path(path_) / "regions";
    if (!std::filesystem::exists(dir, ec)) return absl::OkStatus();
    for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
      if (!entry.is_directory()) continue;
      const std::string name = entry.path().filename().string();
      STRATA_RETURN_IF_ERROR(ValidateRegionName(name));
      STRATA_RETURN_IF_ERROR(OpenRegion(name).status());
    }
    if (ec) return absl::InternalError(absl::StrCat("list ", dir.string(), ": ", ec.message()));
    return absl::OkStatus();
  }

  absl::StatusOr<Region*> OpenRegion(const std::string& name) {
    STRATA_ASSIGN_OR_RETURN(std::unique_ptr<volume::RegionImpl> region,
                            volume::RegionImpl::Open(options_.env, name,
                                                     absl::StrCat(path_, "/regions/", name),
                                                     options_));
    Region* raw = region.get();
    regions_[name] = std::move(region);
    if (default_region_.empty() || name == options_.default_region) default_region_ = name;
    return raw;
  }

  std::vector<std::string> ListRegions() override {
    std::vector<std::string> names;
    for (const auto& [name, region] : regions_) names.push_back(name);
    return names;
  }

  absl::StatusOr<Region*> GetRegion(const std::string& name) override {
    auto it = regions_.find(name);
    if (it == regions_.end()) {
      return absl::NotFoundError(absl::StrCat("region ", name, " does not exist"));
    }
    return it->second.get();
  }

  absl::StatusOr<Region*> CreateRegion(const std::string& name) override {
    STRATA_RETURN_IF_ERROR(ValidateRegionName(name));
    if (regions_.contains(name)) {
      return absl::AlreadyExistsError(absl::StrCat("region ", name, " already exists"));
    }
    return OpenRegion(name);
  }

  Region* DefaultRegion() override { return regions_.at(default_region_).get(); }

 private:
  const std::string path_;
  const StoreOptions options_;
  const std::unique_ptr<FileLock> lock_;
  std::map<std::string, std::unique_ptr<volume::RegionImpl>> regions_;
  std::string default_region_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Store>> Store::Open(const std::string& path,
                                                   const StoreOptions& options) {
  StoreOptions resolved = options;
  if (resolved.env == nullptr) resolved.env = Env::Default();
  std::error_code ec;
  const bool exists = std::filesystem::exists(std::filesystem::path(path) / "regions", ec);
  if (!exists && !options.create_if_missing) {
    return absl::NotFoundError(absl::StrCat("no Strata store in ", path));
  }
  std::filesystem::create_directories(path, ec);
  if (ec) return absl::InternalError(absl::StrCat("mkdir ", path, ": ", ec.message()));
  STRATA_RETURN_IF_ERROR(resolved.env->CreateDirs(path));
  STRATA_ASSIGN_OR_RETURN(std::unique_ptr<FileLock> lock,
                          resolved.env->LockFile(absl::StrCat(path, "/LOCK")));
  auto store = std::make_unique<StoreImpl>(path, resolved, std::move(lock));
  STRATA_RETURN_IF_ERROR(store->OpenExisting());
  if (store->ListRegions().empty()) {
    STRATA_RETURN_IF_ERROR(store->CreateRegion(options.default_region).status());
  }
  return store;
}

}  // namespace strata
