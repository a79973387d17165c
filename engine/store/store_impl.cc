// The Store: a data directory holding one area per region, and the lock that keeps a second
// process out. Layout (docs/formats/layout.md):
//   DIR/LOCK                          exclusive lock (flock)
//   DIR/regions/NAME/catalog/         RocksDB catalog of the region
//   DIR/regions/NAME/heads/           volume heads, one extent file per volume
//   DIR/regions/NAME/segments/        chunk segment files
//   DIR/backend                       where catalogs and chunks live (store/backend_file.h); on
//                                     RADOS, catalog/ and segments/ are in the cluster
//   DIR/node-id                       RADOS: this store's node name in the cluster

#include <filesystem>
#include <map>
#include <random>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "copy/copy_service.h"
#include "image/image_registry.h"
#include "region/region_impl.h"
#include "store/backend_file.h"
#include "strata/store.h"
#include "util/log.h"
#include "util/status_macros.h"

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

// DIR/accounts: one line per account, "id<TAB>name<TAB>access key<TAB>secret key\n".
// Rewritten whole through a temporary file and a rename, so it is never half written.
constexpr char kAccountsFile[] = "accounts";
std::string RandomString(size_t n, absl::string_view alphabet) {
  std::random_device random;
  std::string out;
  for (size_t i = 0; i < n; ++i) out.push_back(alphabet[random() % alphabet.size()]);
  return out;
}

// DIR/node-id: this store's name among the nodes of a cluster, made at the first start.
absl::StatusOr<std::string> NodeId(Env* env, const std::string& dir) {
  const std::string path = absl::StrCat(dir, "/node-id");
  if (env->FileExists(path)) {
    STRATA_ASSIGN_OR_RETURN(std::unique_ptr<File> file, env->OpenFile(path, false));
    std::string id(16, '\0');
    STRATA_RETURN_IF_ERROR(file->Read(0, std::as_writable_bytes(std::span(id.data(), id.size()))));
    return id;
  }
  const std::string id = absl::StrCat("node-", RandomString(11, "0123456789abcdef"));
  STRATA_ASSIGN_OR_RETURN(std::unique_ptr<File> file, env->OpenFile(path + ".tmp", true));
  STRATA_RETURN_IF_ERROR(file->Write(0, std::as_bytes(std::span(id.data(), id.size()))));
  STRATA_RETURN_IF_ERROR(file->Sync());
  STRATA_RETURN_IF_ERROR(env->RenameFile(path + ".tmp", path));
  STRATA_RETURN_IF_ERROR(env->SyncDir(dir));
  return id;
}

class StoreImpl final : public Store {
 public:
  StoreImpl(std::string path, StoreOptions options, std::unique_ptr<FileLock> lock,
            std::shared_ptr<rados::Cluster> cluster)
      : path_(std::move(path)),
        options_(std::move(options)),
        lock_(std::move(lock)),
        cluster_(std::move(cluster)) {}

  ~StoreImpl() override {
    copies_.reset();   // Copies stop (and fail) while their regions are still open.
    regions_.clear();  // Each region stops cleanly before the lock is released.
  }

  absl::Status StartCopies() {
    for (const auto& [name, address] : options_.peer_regions) {
      STRATA_RETURN_IF_ERROR(ValidateRegionName(name));
      if (regions_.contains(name)) {
        return absl::InvalidArgumentError(
            absl::StrCat("peer region ", name, " is also a region of this store"));
      }
    }
    copies_ =
        std::make_unique<copy::CopyService>(*this, options_, absl::StrCat(path_, "/copies.json"));
    return copies_->Load();
  }

  absl::StatusOr<SnapshotInfo> CopySnapshotAcrossRegions(
      const std::string& destination_region, const CrossRegionCopyRequest& request) override {
    STRATA_ASSIGN_OR_RETURN(Region * destination, GetRegion(destination_region));
    if (!regions_.contains(request.source_region) &&
        !options_.peer_regions.contains(request.source_region)) {
      return absl::NotFoundError(
          absl::StrCat("region ", request.source_region, " is neither served here nor a peer"));
    }
    return copies_->Start(*destination, request);
  }

  absl::StatusOr<ImageInfo> CopyImageAcrossRegions(
      const std::string& destination_region, const CrossRegionImageCopyRequest& request) override {
    STRATA_ASSIGN_OR_RETURN(Region * destination, GetRegion(destination_region));
    const std::string& source_region = request.source_region;
    if (!regions_.contains(source_region) && !options_.peer_regions.contains(source_region)) {
      return absl::NotFoundError(
          absl::StrCat("region ", source_region, " is neither served here nor a peer"));
    }
    STRATA_ASSIGN_OR_RETURN(ImageInfo source,
                            copies_->DescribeSourceImage(source_region, request.source_image_id,
                                                         request.request.owner));
    return destination->images().RegisterImageCopy(
        source, source_region, request.request, request.copy_tags,
        [&](const std::string& snapshot_id, const std::string& description) {
          CrossRegionCopyRequest copy{.source_region = source_region,
                                      .source_snapshot_id = snapshot_id};
          copy.request.description = description;
          copy.request.owner = request.request.owner;
          copy.request.encrypted = request.encrypted;
          copy.request.kms_key_id = request.kms_key_id;
          return copies_->Start(*destination, copy);
        });
  }

  absl::StatusOr<CopyRecord> DescribeCopy(const std::string& snapshot_id) override {
    return copies_->Describe(snapshot_id);
  }

  std::vector<CopyRecord> ListCopies() override { return copies_->List(); }

  std::vector<std::string> ListPeerRegions() override { return copies_->PeerRegions(); }

  void ServeTransfer(int fd) override { copies_->ServeRemote(fd); }

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
    STRATA_ASSIGN_OR_RETURN(
        std::unique_ptr<region::RegionImpl> region,
        region::RegionImpl::Open(options_.env, name, absl::StrCat(path_, "/regions/", name),
                                 options_, cluster_));
    STRATA_ASSIGN_OR_RETURN(std::unique_ptr<image::ImageRegistry> images,
                            image::ImageRegistry::Open(*region, options_.hypervisor));
    region->set_images(std::move(images));
    region->set_copy_source_check([this, name](const std::string& snapshot_id) {
      if (copies_ == nullptr) return false;
      for (const CopyRecord& c : copies_->List()) {
        if (c.state == "pending" && c.source_region == name &&
            c.source_snapshot_id == snapshot_id) {
          return true;
        }
      }
      return false;
    });
    Region* raw = region.get();
    regions_[name] = std::move(region);
    if (default_region_.empty() || name == options_.default_region) default_region_ = name;
    return raw;
  }

  std::string DescribeBackend() const override {
    return cluster_ != nullptr ? cluster_->Describe() : absl::StrCat("local (", path_, ")");
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

  // The accounts: DIR/accounts, or on RADOS the omap of object "accounts" in the store's
  // namespace, which every node shares ("id/" id -> the line, "name/" name -> id).
  absl::Status LoadAccounts() {
    STRATA_ASSIGN_OR_RETURN(std::vector<Account> accounts, ReadAccounts());
    absl::MutexLock lock(&accounts_mu_);
    accounts_ = std::move(accounts);
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<Account>> ReadAccounts() {
    std::string text;
    std::string where = absl::StrCat(path_, "/", kAccountsFile);
    if (cluster_ != nullptr) {
      if (account_book_ == nullptr) {
        STRATA_ASSIGN_OR_RETURN(
            account_book_, meta::Catalog::OpenRados(
                               cluster_->IndexPool(cluster_->options().name_space), kAccountsFile));
      }
      where = absl::StrCat("RADOS object ", kAccountsFile);
      STRATA_RETURN_IF_ERROR(
          account_book_->Scan("id/", "", [&](absl::string_view, absl::string_view line) {
            absl::StrAppend(&text, line, "\n");
            return true;
          }));
    } else if (Env* env = options_.env; env->FileExists(where)) {
      STRATA_ASSIGN_OR_RETURN(std::unique_ptr<File> file, env->OpenFile(where, false));
      STRATA_ASSIGN_OR_RETURN(uint64_t size, file->Size());
      text.resize(size);
      STRATA_RETURN_IF_ERROR(
          file->Read(0, std::as_writable_bytes(std::span(text.data(), text.size()))));
    }
    std::vector<Account> accounts;
    for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
      std::vector<std::string> f = absl::StrSplit(line, '\t');
      if (f.size() != 4) return absl::DataLossError(absl::StrCat(where, ": corrupt line"));
      accounts.push_back({f[0], f[1], f[2], f[3]});
    }
    return accounts;
  }

  absl::StatusOr<Account> CreateAccount(const std::string& name) override {
    if (name.empty() || name.size() > 64 ||
        name.find_first_not_of(
            "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.@") !=
            std::string::npos) {
      return absl::InvalidArgumentError(
          "an account name has 1 to 64 letters, digits or the characters - _ . @");
    }
    absl::MutexLock lock(&accounts_mu_);
    for (const Account& a : accounts_) {
      if (a.name == name)
        return absl::AlreadyExistsError(absl::StrCat("account ", name, " exists"));
    }
    Account account;
    do {
      account.id = RandomString(12, "0123456789");
    } while (account.id[0] == '0' || FindLocked(account.id, true).ok());
    account.name = name;
    account.access_key_id = "AKIA" + RandomString(16, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567");
    account.secret_access_key =
        RandomString(40, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/");
    std::vector<Account> next = accounts_;
    next.push_back(account);
    if (cluster_ != nullptr) {
      // Guarded: another node making the same name (or id) at once makes this one fail.
      meta::WriteBatch batch;
      batch.Expect(absl::StrCat("name/", name), "");
      batch.Expect(absl::StrCat("id/", account.id), "");
      batch.Put(absl::StrCat("name/", name), account.id);
      batch.Put(absl::StrCat("id/", account.id),
                absl::StrCat(account.id, "\t", name, "\t", account.access_key_id, "\t",
                             account.secret_access_key));
      if (absl::Status s = account_book_->Write(batch); !s.ok()) {
        if (absl::IsAborted(s))
          return absl::AlreadyExistsError(absl::StrCat("account ", name, " exists"));
        return s;
      }
    } else {
      STRATA_RETURN_IF_ERROR(SaveAccounts(next));
    }
    accounts_ = std::move(next);
    return account;
  }

  absl::StatusOr<Account> FindAccessKey(const std::string& access_key_id) override {
    {
      absl::MutexLock lock(&accounts_mu_);
      absl::StatusOr<Account> found = FindLocked(access_key_id, false);
      if (found.ok() || cluster_ == nullptr) return found;
    }
    // RADOS: made on another node since this one last read them.
    STRATA_RETURN_IF_ERROR(LoadAccounts());
    absl::MutexLock lock(&accounts_mu_);
    return FindLocked(access_key_id, false);
  }

  std::vector<Account> ListAccounts() override {
    if (cluster_ != nullptr) {
      if (absl::Status s = LoadAccounts(); !s.ok()) {
        STRATA_LOG(kWarning, "reading the accounts: ", s.ToString());
      }
    }
    absl::MutexLock lock(&accounts_mu_);
    return accounts_;
  }

 private:
  absl::StatusOr<Account> FindLocked(const std::string& key, bool by_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(accounts_mu_) {
    for (const Account& a : accounts_) {
      if ((by_id ? a.id : a.access_key_id) == key) return a;
    }
    return absl::NotFoundError(
        absl::StrCat("no account with ", by_id ? "id " : "access key ", key));
  }

  absl::Status SaveAccounts(const std::vector<Account>& accounts) {
    std::string text;
    for (const Account& a : accounts) {
      absl::StrAppend(&text, a.id, "\t", a.name, "\t", a.access_key_id, "\t", a.secret_access_key,
                      "\n");
    }
    Env* env = options_.env;
    const std::string path = absl::StrCat(path_, "/", kAccountsFile);
    const std::string tmp = path + ".tmp";
    {
      STRATA_ASSIGN_OR_RETURN(std::unique_ptr<File> file, env->OpenFile(tmp, true));
      STRATA_RETURN_IF_ERROR(file->Truncate(0));
      if (env == Env::Default()) {
        // Secrets: owner-only on the real file system, before a byte of them is written.
        std::error_code ec;
        std::filesystem::permissions(
            tmp, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write,
            std::filesystem::perm_options::replace, ec);
        if (ec) return absl::InternalError(absl::StrCat("cannot make ", tmp, " private"));
      }
      STRATA_RETURN_IF_ERROR(file->Write(0, std::as_bytes(std::span(text.data(), text.size()))));
      STRATA_RETURN_IF_ERROR(file->Sync());
    }
    STRATA_RETURN_IF_ERROR(env->RenameFile(tmp, path));
    return env->SyncDir(path_);
  }

  absl::Mutex accounts_mu_;
  std::vector<Account> accounts_ ABSL_GUARDED_BY(accounts_mu_);

  const std::string path_;
  const StoreOptions options_;
  const std::unique_ptr<FileLock> lock_;
  const std::shared_ptr<rados::Cluster> cluster_;  // The RADOS backend's; null when local.
  std::unique_ptr<meta::Catalog> account_book_;    // RADOS: the shared accounts object.
  std::map<std::string, std::unique_ptr<region::RegionImpl>> regions_;
  std::string default_region_;
  std::unique_ptr<copy::CopyService> copies_;
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
  STRATA_ASSIGN_OR_RETURN(store::BackendRecord recorded,
                          store::ReadBackendFile(resolved.env, path));
  STRATA_ASSIGN_OR_RETURN(resolved.ceph,
                          store::SettleBackend(recorded, options.ceph, exists, path));
  std::shared_ptr<rados::Cluster> cluster;
  if (resolved.ceph.has_value()) {
    if (resolved.ceph->node_id.empty()) {
      STRATA_ASSIGN_OR_RETURN(resolved.ceph->node_id, NodeId(resolved.env, path));
    }
    STRATA_ASSIGN_OR_RETURN(cluster, rados::Cluster::Connect(*resolved.ceph));
  }
  if (!recorded.present) {
    STRATA_RETURN_IF_ERROR(store::WriteBackendFile(resolved.env, path, resolved.ceph));
  }
  auto store = std::make_unique<StoreImpl>(path, resolved, std::move(lock), std::move(cluster));
  STRATA_RETURN_IF_ERROR(store->LoadAccounts());
  STRATA_RETURN_IF_ERROR(store->OpenExisting());
  if (store->ListRegions().empty()) {
    STRATA_RETURN_IF_ERROR(store->CreateRegion(options.default_region).status());
  }
  STRATA_RETURN_IF_ERROR(store->StartCopies());
  return store;
}

}  // namespace strata
