// The RADOS implementation of the catalog: every key of a region is an omap entry of one object,
// so a WriteBatch is one object operation (atomic, acknowledged by the OSDs once durable) and a
// guard is an omap_cmp inside it. docs/formats/rados.md says why one object, and its limits.

#include <algorithm>
#include <map>
#include <memory>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "meta/catalog.h"
#include "rados/cluster.h"
#include "rados/librados.hpp"
#include "util/status_macros.h"

namespace strata::meta {
namespace {

// Entries per omap read: the OSD caps a request at osd_max_omap_entries_per_request (1024).
inline constexpr uint64_t kScanPage = 1000;

librados::bufferlist ToBuffer(absl::string_view s) {
  librados::bufferlist bl;
  bl.append(s.data(), s.size());
  return bl;
}

class RadosCatalog final : public Catalog {
 public:
  RadosCatalog(librados::IoCtx ioctx, std::string object)
      : ioctx_(std::move(ioctx)), object_(std::move(object)) {}

  absl::StatusOr<std::optional<std::string>> Get(absl::string_view key) override {
    librados::ObjectReadOperation op;
    std::map<std::string, librados::bufferlist> values;
    int rval = 0;
    op.omap_get_vals_by_keys({std::string(key)}, &values, &rval);
    const int rc = ioctx_.operate(object_, &op, nullptr);
    if (rc == -ENOENT) return std::nullopt;  // No write yet.
    if (absl::Status s = rados::FromRados(rc < 0 ? rc : rval, Context("get")); !s.ok()) return s;
    auto it = values.find(std::string(key));
    if (it == values.end()) return std::nullopt;
    return it->second.to_str();
  }

  absl::StatusOr<std::vector<std::optional<std::string>>> GetMany(
      const std::vector<std::string>& keys) override {
    std::vector<std::optional<std::string>> out(keys.size());
    for (size_t begin = 0; begin < keys.size(); begin += kScanPage) {
      const size_t end = std::min(keys.size(), begin + kScanPage);
      librados::ObjectReadOperation op;
      std::map<std::string, librados::bufferlist> values;
      int rval = 0;
      op.omap_get_vals_by_keys(std::set<std::string>(keys.begin() + begin, keys.begin() + end),
                               &values, &rval);
      const int rc = ioctx_.operate(object_, &op, nullptr);
      if (rc == -ENOENT) return out;
      if (absl::Status s = rados::FromRados(rc < 0 ? rc : rval, Context("get")); !s.ok()) {
        return s;
      }
      for (size_t i = begin; i < end; ++i) {
        if (auto it = values.find(keys[i]); it != values.end()) out[i] = it->second.to_str();
      }
    }
    return out;
  }

  absl::Status Write(const WriteBatch& batch) override {
    if (batch.empty() && batch.guards().empty()) return absl::OkStatus();
    // The batch's final effect per key (a later op on a key replaces an earlier one).
    std::map<std::string, const WriteBatch::Op*> last;
    for (const WriteBatch::Op& op : batch.ops()) last[op.key] = &op;
    std::map<std::string, librados::bufferlist> puts;
    std::set<std::string> deletes;
    for (const auto& [key, op] : last) {
      if (op->is_delete) {
        deletes.insert(key);
      } else {
        puts[key] = ToBuffer(op->value);
      }
    }
    librados::ObjectWriteOperation op;
    op.create(false);
    int cmp_rval = 0;
    if (!batch.guards().empty()) {
      std::map<std::string, std::pair<librados::bufferlist, int>> assertions;
      for (const auto& [key, value] : batch.guards()) {
        assertions[key] = {ToBuffer(value), LIBRADOS_CMPXATTR_OP_EQ};
      }
      op.omap_cmp(assertions, &cmp_rval);
    }
    if (!deletes.empty()) op.omap_rm_keys(deletes);
    if (!puts.empty()) op.omap_set(puts);
    const int rc = ioctx_.operate(object_, &op);
    if (rc == -ECANCELED) {
      return absl::AbortedError(
          absl::StrCat(Context("write"), ": a guarded key changed (another writer)"));
    }
    return rados::FromRados(rc, Context("write"));
  }

  absl::Status Scan(absl::string_view prefix, absl::string_view start, const ScanFn& fn) override {
    std::string after;
    if (!start.empty()) {
      // omap listings start after a key: the first key itself is fetched by name.
      STRATA_ASSIGN_OR_RETURN(std::optional<std::string> first, Get(start));
      if (first.has_value() && !fn(start, *first)) return absl::OkStatus();
      after = std::string(start);
    }
    for (bool more = true; more;) {
      librados::ObjectReadOperation op;
      std::map<std::string, librados::bufferlist> values;
      int rval = 0;
      op.omap_get_vals2(after, std::string(prefix), kScanPage, &values, &more, &rval);
      const int rc = ioctx_.operate(object_, &op, nullptr);
      if (rc == -ENOENT) return absl::OkStatus();
      if (absl::Status s = rados::FromRados(rc < 0 ? rc : rval, Context("scan")); !s.ok()) {
        return s;
      }
      for (auto& [key, value] : values) {
        if (!absl::StartsWith(key, prefix)) return absl::OkStatus();
        if (!fn(key, value.to_str())) return absl::OkStatus();
      }
      if (values.empty()) break;
      after = values.rbegin()->first;
    }
    return absl::OkStatus();
  }

 private:
  std::string Context(absl::string_view what) const {
    return absl::StrCat("catalog ", what, " (RADOS object ", object_, " in namespace ",
                        ioctx_.get_namespace(), ")");
  }

  // IoCtx operations are thread-safe; the copy is this catalog's own.
  mutable librados::IoCtx ioctx_;
  const std::string object_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Catalog>> Catalog::OpenRados(librados::IoCtx ioctx,
                                                            const std::string& object) {
  auto catalog = std::make_unique<RadosCatalog>(std::move(ioctx), object);
  // A first read proves the pool answers (within the cluster's op timeout).
  if (absl::StatusOr<std::optional<std::string>> probe = catalog->Get("x/format"); !probe.ok()) {
    return probe.status();
  }
  return catalog;
}

}  // namespace strata::meta
