// The RocksDB implementation of the catalog. RocksDB statuses become absl::Status here, once.

#include <memory>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "meta/catalog.h"
#include "meta/env_file_system.h"
#include "rocksdb/db.h"
#include "rocksdb/env.h"
#include "rocksdb/options.h"
#include "rocksdb/table.h"
#include "rocksdb/write_batch.h"

namespace strata::meta {
namespace {

absl::Status FromRocks(const rocksdb::Status& s, absl::string_view context) {
  if (s.ok()) return absl::OkStatus();
  const std::string message = absl::StrCat("catalog ", context, ": ", s.ToString());
  if (s.IsNotFound()) return absl::NotFoundError(message);
  if (s.IsCorruption()) return absl::DataLossError(message);
  if (s.IsNoSpace()) return absl::ResourceExhaustedError(message);
  if (s.IsIOError()) {
    return s.ToString().find("No space") != std::string::npos
               ? absl::ResourceExhaustedError(message)
               : absl::DataLossError(message);
  }
  if (s.IsInvalidArgument()) return absl::InvalidArgumentError(message);
  if (s.IsBusy() || s.IsTryAgain()) return absl::UnavailableError(message);
  return absl::InternalError(message);
}

rocksdb::Slice ToSlice(absl::string_view s) { return rocksdb::Slice(s.data(), s.size()); }

class RocksDbCatalog final : public Catalog {
 public:
  RocksDbCatalog(std::unique_ptr<rocksdb::Env> env, std::unique_ptr<rocksdb::DB> db)
      : env_(std::move(env)), db_(std::move(db)) {}

  absl::StatusOr<std::optional<std::string>> Get(absl::string_view key) override {
    std::string value;
    const rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), ToSlice(key), &value);
    if (s.IsNotFound()) return std::nullopt;
    if (absl::Status st = FromRocks(s, "get"); !st.ok()) return st;
    return value;
  }

  absl::StatusOr<std::vector<std::optional<std::string>>> GetMany(
      const std::vector<std::string>& keys) override {
    std::vector<rocksdb::Slice> slices;
    for (const std::string& key : keys) slices.push_back(ToSlice(key));
    std::vector<std::string> values;
    const std::vector<rocksdb::Status> statuses =
        db_->MultiGet(rocksdb::ReadOptions(), slices, &values);
    std::vector<std::optional<std::string>> out(keys.size());
    for (size_t i = 0; i < keys.size(); ++i) {
      if (statuses[i].IsNotFound()) continue;
      if (absl::Status st = FromRocks(statuses[i], "get"); !st.ok()) return st;
      out[i] = std::move(values[i]);
    }
    return out;
  }

  absl::Status Write(const WriteBatch& batch) override {
    if (batch.empty() && batch.guards().empty()) return absl::OkStatus();
    // One process owns a RocksDB catalog: a guarded batch checks and writes holding guard_mu_
    // exclusively, the others (RocksDB groups their commits) hold it shared.
    if (batch.guards().empty()) {
      absl::ReaderMutexLock lock(&guard_mu_);
      return Apply(batch);
    }
    absl::MutexLock lock(&guard_mu_);
    for (const auto& [key, expected] : batch.guards()) {
      std::string value;
      const rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), ToSlice(key), &value);
      if (!s.ok() && !s.IsNotFound()) return FromRocks(s, "guard");
      if (value != expected) {
        return absl::AbortedError(absl::StrCat("catalog: ", key, " changed (another writer)"));
      }
    }
    return Apply(batch);
  }

  absl::Status Scan(absl::string_view prefix, absl::string_view start, const ScanFn& fn) override {
    rocksdb::ReadOptions options;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(options));
    for (it->Seek(ToSlice(start.empty() ? prefix : start)); it->Valid(); it->Next()) {
      const rocksdb::Slice key = it->key();
      if (!key.starts_with(ToSlice(prefix))) break;
      if (!fn(absl::string_view(key.data(), key.size()),
              absl::string_view(it->value().data(), it->value().size()))) {
        break;
      }
    }
    return FromRocks(it->status(), "scan");
  }

 private:
  absl::Status Apply(const WriteBatch& batch) ABSL_SHARED_LOCKS_REQUIRED(guard_mu_) {
    rocksdb::WriteBatch wb;
    for (const WriteBatch::Op& op : batch.ops()) {
      const rocksdb::Status s =
          op.is_delete ? wb.Delete(ToSlice(op.key)) : wb.Put(ToSlice(op.key), ToSlice(op.value));
      if (absl::Status st = FromRocks(s, "batch"); !st.ok()) return st;
    }
    rocksdb::WriteOptions options;
    options.sync = true;
    return FromRocks(db_->Write(options, &wb), "write");
  }

  const std::unique_ptr<rocksdb::Env> env_;  // Null: RocksDB's own; outlives db_.
  const std::unique_ptr<rocksdb::DB> db_;
  absl::Mutex guard_mu_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Catalog>> Catalog::OpenRocksDb(Env* env, const std::string& path) {
  rocksdb::Options options;
  // On the process's POSIX Env RocksDB keeps its own file system (preallocation, range syncs);
  // any other Env (memory, fault injection) carries the catalog's files too.
  std::unique_ptr<rocksdb::Env> rocks_env;
  std::shared_ptr<LastIoError> last_error;
  if (env != Env::Default()) {
    last_error = std::make_shared<LastIoError>();
    rocks_env = rocksdb::NewCompositeEnv(NewEnvFileSystem(env, last_error));
    options.env = rocks_env.get();
  }
  options.create_if_missing = true;
  options.paranoid_checks = true;
  options.max_open_files = 256;
  options.keep_log_file_num = 2;
  options.info_log_level = rocksdb::InfoLogLevel::WARN_LEVEL;
  rocksdb::BlockBasedTableOptions table;
  table.cache_index_and_filter_blocks = true;
  options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  rocksdb::DB* raw = nullptr;
  if (absl::Status s =
          FromRocks(rocksdb::DB::Open(options, path, &raw), absl::StrCat("open ", path));
      !s.ok()) {
    const std::string io_error = last_error != nullptr ? last_error->Get() : "";
    if (io_error.empty() || absl::StrContains(s.message(), io_error)) return s;
    return absl::Status(s.code(), absl::StrCat(s.message(), " (after ", io_error, ")"));
  }
  return std::make_unique<RocksDbCatalog>(std::move(rocks_env), std::unique_ptr<rocksdb::DB>(raw));
}

}  // namespace strata::meta
