// DIR/backend: read, written, and the backend a store opens on.
#include "store/backend_file.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "util/status_macros.h"

namespace strata::store {
namespace {

constexpr char kBackendFile[] = "backend";

std::string Describe(const std::optional<CephBackendOptions>& ceph) {
  if (!ceph.has_value()) return "the local backend";
  return absl::StrCat("RADOS (pool ", ceph->pool, ", data pool ",
                      ceph->data_pool.empty() ? ceph->pool : ceph->data_pool, ", namespace ",
                      ceph->name_space, ")");
}

bool SamePlace(const CephBackendOptions& a, const CephBackendOptions& b) {
  auto data = [](const CephBackendOptions& c) {
    return c.data_pool.empty() ? c.pool : c.data_pool;
  };
  return a.pool == b.pool && data(a) == data(b) && a.name_space == b.name_space;
}

}  // namespace

absl::StatusOr<BackendRecord> ReadBackendFile(Env* env, const std::string& dir) {
  const std::string path = absl::StrCat(dir, "/", kBackendFile);
  BackendRecord record;
  if (!env->FileExists(path)) return record;
  record.present = true;
  STRATA_ASSIGN_OR_RETURN(std::unique_ptr<File> file, env->OpenFile(path, false));
  STRATA_ASSIGN_OR_RETURN(uint64_t size, file->Size());
  std::string text(size, '\0');
  STRATA_RETURN_IF_ERROR(
      file->Read(0, std::as_writable_bytes(std::span(text.data(), text.size()))));
  CephBackendOptions ceph;
  std::string backend;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    std::pair<std::string, std::string> kv = absl::StrSplit(line, absl::MaxSplits('=', 1));
    const auto& [key, value] = kv;
    if (key == "backend")
      backend = value;
    else if (key == "pool")
      ceph.pool = value;
    else if (key == "data_pool")
      ceph.data_pool = value;
    else if (key == "namespace")
      ceph.name_space = value;
    else if (key == "conf")
      ceph.conf_file = value;
    else if (key == "client_id")
      ceph.client_id = value;
    else if (key == "gc_grace_seconds" && !absl::SimpleAtoi(value, &ceph.gc_grace_seconds)) {
      return absl::DataLossError(absl::StrCat(path, ": bad gc_grace_seconds"));
    }
  }
  if (backend == "rados" && !ceph.pool.empty()) {
    record.ceph = ceph;
  } else if (backend != "local") {
    return absl::DataLossError(absl::StrCat(path, " is corrupt"));
  }
  return record;
}

absl::Status WriteBackendFile(Env* env, const std::string& dir,
                              const std::optional<CephBackendOptions>& ceph) {
  std::string text = ceph.has_value() ? "backend=rados\n" : "backend=local\n";
  if (ceph.has_value()) {
    absl::StrAppend(&text, "pool=", ceph->pool,
                    "\ndata_pool=", ceph->data_pool.empty() ? ceph->pool : ceph->data_pool,
                    "\nnamespace=", ceph->name_space, "\nconf=", ceph->conf_file,
                    "\nclient_id=", ceph->client_id, "\ngc_grace_seconds=", ceph->gc_grace_seconds,
                    "\n");
  }
  const std::string path = absl::StrCat(dir, "/", kBackendFile);
  {
    STRATA_ASSIGN_OR_RETURN(std::unique_ptr<File> file, env->OpenFile(path + ".tmp", true));
    STRATA_RETURN_IF_ERROR(file->Truncate(0));
    STRATA_RETURN_IF_ERROR(file->Write(0, std::as_bytes(std::span(text.data(), text.size()))));
    STRATA_RETURN_IF_ERROR(file->Sync());
  }
  STRATA_RETURN_IF_ERROR(env->RenameFile(path + ".tmp", path));
  return env->SyncDir(dir);
}

}  // namespace strata::store

namespace strata {

absl::StatusOr<std::string> DescribeStoreBackend(const std::string& dir) {
  STRATA_ASSIGN_OR_RETURN(store::BackendRecord record, store::ReadBackendFile(Env::Default(), dir));
  if (!record.present) return absl::NotFoundError(absl::StrCat("no ", dir, "/backend"));
  return store::Describe(record.ceph);
}

}  // namespace strata

namespace strata::store {

absl::StatusOr<std::optional<CephBackendOptions>> SettleBackend(
    const BackendRecord& recorded, const std::optional<CephBackendOptions>& requested,
    bool has_regions, const std::string& dir) {
  std::optional<CephBackendOptions> stored = recorded.ceph;
  if (!recorded.present && !has_regions) return requested;  // A new store: as asked.
  if (!stored.has_value()) {
    if (!requested.has_value()) return std::nullopt;
    return absl::FailedPreconditionError(
        absl::StrCat(dir, " keeps its regions on the local backend, not on ", Describe(requested),
                     "; start without --backend rados, or give RADOS a new data directory"));
  }
  if (!requested.has_value()) return stored;  // Reached as recorded ($CEPH_CONF if none).
  if (!SamePlace(*stored, *requested)) {
    return absl::FailedPreconditionError(absl::StrCat(
        dir, " keeps its regions on ", Describe(stored), ", not on ", Describe(requested),
        "; start with its --pool, --data-pool and "
        "--ceph-namespace, or give these a new data directory"));
  }
  return requested;
}

}  // namespace strata::store
