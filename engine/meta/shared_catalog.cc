// SharedCatalog: node-scoped keys, the region lease and the generation (shared_catalog.h).
#include "meta/shared_catalog.h"

#include <cerrno>
#include <random>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "rados/cluster.h"
#include "util/log.h"
#include "util/status_macros.h"

namespace strata::meta {
namespace {

inline constexpr char kLeaseLock[] = "strata.lease";
inline constexpr char kGenKey[] = "x/gen";
inline constexpr absl::string_view kNodeRegistry = "x/node/";
// Keys of one node's own state (schema.h): stored under "n/" node "/".
inline constexpr absl::string_view kNodeScoped[] = {"v/",     "o/",      "d/",
                                                    "i/ins/", "x/clean", "x/resumable/"};
// Shared keys that change no cached or read-modify-written record: no new generation.
inline constexpr absl::string_view kUngenerational[] = {"c/", "m/", "r/", "n/", "x/node/"};

bool NodeScoped(absl::string_view key) {
  for (absl::string_view p : kNodeScoped) {
    if (absl::StartsWith(key, p)) return true;
  }
  return false;
}

bool ChangesGeneration(absl::string_view key) {
  if (NodeScoped(key)) return false;
  for (absl::string_view p : kUngenerational) {
    if (absl::StartsWith(key, p)) return false;
  }
  return true;
}

std::string NewToken() {
  std::random_device random;
  return absl::StrFormat("%08x%08x%08x%08x", random(), random(), random(), random());
}

}  // namespace

std::string SharedCatalog::NodeKey(absl::string_view node, absl::string_view key) {
  return absl::StrCat("n/", node, "/", key);
}

SharedCatalog::SharedCatalog(std::unique_ptr<Catalog> base, rados::Pool pool, std::string object,
                             SharedCatalogOptions options)
    : base_(std::move(base)),
      pool_(std::move(pool)),
      object_(std::move(object)),
      options_(std::move(options)),
      node_prefix_(NodeKey(options_.node_id, "")) {}

absl::StatusOr<std::unique_ptr<SharedCatalog>> SharedCatalog::Open(std::unique_ptr<Catalog> base,
                                                                   rados::Pool pool,
                                                                   std::string object,
                                                                   SharedCatalogOptions options) {
  if (options.node_id.empty() || absl::StrContains(options.node_id, '/')) {
    return absl::InvalidArgumentError(absl::StrCat("bad node id '", options.node_id, "'"));
  }
  std::unique_ptr<SharedCatalog> catalog(
      new SharedCatalog(std::move(base), std::move(pool), std::move(object), std::move(options)));
  STRATA_ASSIGN_OR_RETURN(std::optional<std::string> gen, catalog->base_->Get(kGenKey));
  {
    absl::MutexLock lock(&catalog->write_mu_);
    catalog->seen_gen_ = gen.value_or("");
  }
  WriteBatch batch;
  batch.Put(absl::StrCat(kNodeRegistry, catalog->options_.node_id), catalog->options_.description);
  STRATA_RETURN_IF_ERROR(catalog->base_->Write(batch));
  return catalog;
}

SharedCatalog::~SharedCatalog() {
  absl::MutexLock lock(&write_mu_);
  if (held_) (void)pool_.Unlock(object_, kLeaseLock, options_.node_id);
}

std::string SharedCatalog::Map(absl::string_view key) const {
  return NodeScoped(key) ? absl::StrCat(node_prefix_, key) : std::string(key);
}

absl::StatusOr<std::optional<std::string>> SharedCatalog::Get(absl::string_view key) {
  return base_->Get(Map(key));
}

absl::StatusOr<std::vector<std::optional<std::string>>> SharedCatalog::GetMany(
    const std::vector<std::string>& keys) {
  std::vector<std::string> mapped;
  mapped.reserve(keys.size());
  for (const std::string& key : keys) mapped.push_back(Map(key));
  return base_->GetMany(mapped);
}

absl::Status SharedCatalog::Scan(absl::string_view prefix, absl::string_view start,
                                 const ScanFn& fn) {
  if (!NodeScoped(prefix)) return base_->Scan(prefix, start, fn);
  return base_->Scan(Map(prefix), start.empty() ? std::string() : Map(start),
                     [&](absl::string_view key, absl::string_view value) {
                       return fn(key.substr(node_prefix_.size()), value);
                     });
}

absl::Status SharedCatalog::Write(const WriteBatch& batch) {
  WriteBatch mapped;
  bool generational = false;
  for (const WriteBatch::Op& op : batch.ops()) {
    generational = generational || ChangesGeneration(op.key);
    if (op.is_delete) {
      mapped.Delete(Map(op.key));
    } else {
      mapped.Put(Map(op.key), op.value);
    }
  }
  for (const auto& [key, value] : batch.guards()) mapped.Expect(Map(key), value);
  if (!generational) return base_->Write(mapped);

  // A change of shared records runs in the lease: entered here if the caller has not (a blind
  // write); a read-modify-write enters it before it reads.
  STRATA_ASSIGN_OR_RETURN(util::SharedHold held, Enter());
  absl::MutexLock lock(&write_mu_);
  RenewIfOld();
  const std::string token = NewToken();
  mapped.Expect(kGenKey, seen_gen_);
  mapped.Put(kGenKey, token);
  absl::Status written = base_->Write(mapped);
  if (written.ok()) {
    seen_gen_ = token;
    return written;
  }
  if (absl::IsAborted(written)) {
    // Another guard of the batch, or the generation: another node changed the region since
    // this node last looked (its lease lapsed, or the write ran outside it).
    absl::StatusOr<std::optional<std::string>> gen = base_->Get(kGenKey);
    if (gen.ok() && gen->value_or("") != seen_gen_) {
      return absl::AbortedError(
          "the region changed on another node while this change was prepared; retry");
    }
  }
  return written;
}

void SharedCatalog::RenewIfOld() {
  if (!held_ || absl::Now() - taken_at_ < absl::Seconds(options_.lease_seconds) / 3) return;
  const int rc = pool_.LockExclusive(object_, kLeaseLock, options_.node_id, options_.description,
                                     options_.lease_seconds, /*renew=*/true);
  if (rc == 0) {
    taken_at_ = absl::Now();
  } else {
    // Lapsed and maybe taken: the generation guard of the next write decides.
    STRATA_LOG(kWarning, "region lease (", pool_.name_space(), "): renewing: ", rc);
  }
}

absl::StatusOr<util::SharedHold> SharedCatalog::Enter() {
  {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](bool* acquiring) { return !*acquiring; }, &acquiring_));
    if (holders_ > 0) {
      ++holders_;
      absl::MutexLock write_lock(&write_mu_);
      RenewIfOld();
      return util::SharedHold([this] { Leave(); });
    }
    acquiring_ = true;
  }
  absl::Status taken = TakeLease();
  absl::MutexLock lock(&mu_);
  acquiring_ = false;
  if (!taken.ok()) return taken;
  ++holders_;
  return util::SharedHold([this] { Leave(); });
}

void SharedCatalog::Leave() {
  absl::MutexLock lock(&mu_);
  if (--holders_ > 0) return;
  absl::MutexLock write_lock(&write_mu_);
  if (!held_) return;
  held_ = false;
  if (int rc = pool_.Unlock(object_, kLeaseLock, options_.node_id); rc < 0 && rc != -ENOENT) {
    STRATA_LOG(kWarning, "region lease (", pool_.name_space(), "): releasing: ", rc,
               "; it expires in ", options_.lease_seconds, " s");
  }
}

absl::Status SharedCatalog::TakeLease() {
  const absl::Time deadline = absl::Now() + options_.wait;
  absl::Duration backoff = absl::Milliseconds(1);
  std::string holder;
  for (;;) {
    const int rc = pool_.LockExclusive(object_, kLeaseLock, options_.node_id, options_.description,
                                       options_.lease_seconds);
    if (rc == 0 || rc == -EEXIST) break;  // EEXIST: this client holds it (a failed release).
    if (rc != -EBUSY) return rados::FromRados(rc, "taking the region lease");
    std::vector<rados::Pool::Locker> lockers;
    if (pool_.ListLockers(object_, kLeaseLock, &lockers) >= 0) {
      for (const rados::Pool::Locker& locker : lockers) {
        if (locker.cookie == options_.node_id) {
          // This node's lease from before a crash: the node's claim proves that process gone.
          (void)pool_.BreakLock(object_, kLeaseLock, locker.client, locker.cookie);
        }
        holder = absl::StrCat("node ", locker.cookie, " (", locker.client, ")");
      }
    }
    if (absl::Now() >= deadline) {
      return absl::UnavailableError(
          absl::StrCat("the region lease (RADOS namespace ", pool_.name_space(), ") is held by ",
                       holder.empty() ? "another node" : holder, " for longer than ",
                       absl::FormatDuration(options_.wait), "; retry later"));
    }
    absl::SleepFor(backoff);
    backoff = std::min(backoff * 2, absl::Milliseconds(50));
  }
  absl::StatusOr<std::optional<std::string>> gen = base_->Get(kGenKey);
  if (!gen.ok()) {
    (void)pool_.Unlock(object_, kLeaseLock, options_.node_id);
    return gen.status();
  }
  absl::MutexLock lock(&write_mu_);
  held_ = true;
  taken_at_ = absl::Now();
  if (gen->value_or("") != seen_gen_) {
    seen_gen_ = gen->value_or("");
    foreign_changes_.fetch_add(1);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> SharedCatalog::Nodes() {
  std::vector<std::string> nodes;
  STRATA_RETURN_IF_ERROR(base_->Scan(kNodeRegistry, "", [&](absl::string_view key, auto) {
    nodes.emplace_back(key.substr(kNodeRegistry.size()));
    return true;
  }));
  return nodes;
}

}  // namespace strata::meta
