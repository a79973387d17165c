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
#include "util/status_macros.h"

namespace strata::meta {
namespace {

// Entries per omap read: the OSD caps a request at osd_max_omap_entries_per_request (1024).
inline constexpr uint64_t kScanPage = 1000;

class RadosCatalog final : public Catalog {
 public:
  RadosCatalog(rados::Pool pool, std::string object)
      : pool_(std::move(pool)), object_(std::move(object)) {}

  absl::StatusOr<std::optional<std::string>> Get(absl::string_view key) override {
    STRATA_ASSIGN_OR_RETURN(std::vector<std::optional<std::string>> values,
                            GetMany({std::string(key)}));
    return values[0];
  }

  absl::StatusOr<std::vector<std::optional<std::string>>> GetMany(
      const std::vector<std::string>& keys) override {
    std::vector<std::optional<std::string>> out(keys.size());
    for (size_t begin = 0; begin < keys.size(); begin += kScanPage) {
      const size_t end = std::min(keys.size(), begin + kScanPage);
      std::map<std::string, std::string> values;
      STRATA_RETURN_IF_ERROR(rados::FromRados(
          pool_.OmapGet(object_, std::set<std::string>(keys.begin() + begin, keys.begin() + end),
                        &values),
          Context("get")));
      for (size_t i = begin; i < end; ++i) {
        if (auto it = values.find(keys[i]); it != values.end()) out[i] = std::move(it->second);
      }
    }
    return out;
  }

  absl::Status Write(const WriteBatch& batch) override {
    if (batch.empty() && batch.guards().empty()) return absl::OkStatus();
    // The batch's final effect per key (a later op on a key replaces an earlier one).
    std::map<std::string, const WriteBatch::Op*> last;
    for (const WriteBatch::Op& op : batch.ops()) last[op.key] = &op;
    std::map<std::string, std::string> puts;
    std::set<std::string> deletes;
    for (const auto& [key, op] : last) {
      if (op->is_delete) {
        deletes.insert(key);
      } else {
        puts[key] = op->value;
      }
    }
    std::map<std::string, std::string> guards(batch.guards().begin(), batch.guards().end());
    const int rc = pool_.OmapWrite(object_, guards, deletes, puts);
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
      std::map<std::string, std::string> values;
      STRATA_RETURN_IF_ERROR(rados::FromRados(
          pool_.OmapList(object_, after, std::string(prefix), kScanPage, &values, &more),
          Context("scan")));
      for (const auto& [key, value] : values) {
        if (!absl::StartsWith(key, prefix)) return absl::OkStatus();
        if (!fn(key, value)) return absl::OkStatus();
      }
      if (values.empty()) break;
      after = values.rbegin()->first;
    }
    return absl::OkStatus();
  }

 private:
  std::string Context(absl::string_view what) const {
    return absl::StrCat("catalog ", what, " (RADOS object ", object_, " in namespace ",
                        pool_.name_space(), ")");
  }

  const rados::Pool pool_;
  const std::string object_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Catalog>> Catalog::OpenRados(rados::Pool pool,
                                                            const std::string& object) {
  auto catalog = std::make_unique<RadosCatalog>(std::move(pool), object);
  // A first read proves the pool answers (within the cluster's op timeout).
  if (absl::StatusOr<std::optional<std::string>> probe = catalog->Get("x/format"); !probe.ok()) {
    return probe.status();
  }
  return catalog;
}

}  // namespace strata::meta
