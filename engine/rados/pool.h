#pragma once
// A pool and namespace of the Ceph cluster, and the object operations the RADOS backend uses.
// librados itself is named only in engine/rados/*.cc, which are compiled as C++17: its headers
// (Ceph 16) do not compile as C++20 under clang. This header uses only standard types, so the
// rest of the engine (C++20) and the tests reach RADOS through it. Return codes are librados's
// (0 or -errno); rados::FromRados (cluster.h) turns them into statuses.

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace strata::rados {

struct PoolState;  // The librados I/O context (pool.cc).

// Thread-safe: each call is one librados operation (or a batch of them).
class Pool {
 public:
  explicit Pool(std::shared_ptr<PoolState> state);
  ~Pool();
  Pool(const Pool&) = default;
  Pool& operator=(const Pool&) = default;

  const std::string& name_space() const;
  // The librados I/O context, for engine/rados/*.cc.
  const std::shared_ptr<PoolState>& state() const { return state_; }

  // omap of `oid`. OmapGet fills `values` with those of `keys` that exist. OmapList returns up
  // to `max` entries after `after` (exclusive) whose keys start with `prefix`, and whether more
  // follow. A missing object reads as empty (rc 0).
  int OmapGet(const std::string& oid, const std::set<std::string>& keys,
              std::map<std::string, std::string>* values) const;
  int OmapList(const std::string& oid, const std::string& after, const std::string& prefix,
               uint64_t max, std::map<std::string, std::string>* values, bool* more) const;
  // One atomic operation on `oid` (made if missing): every guard compared (omap_cmp EQ; an
  // absent key compares as ""), then `deletes` removed and `puts` set. -ECANCELED: a guard
  // failed and nothing changed.
  int OmapWrite(const std::string& oid, const std::map<std::string, std::string>& guards,
                const std::set<std::string>& deletes,
                const std::map<std::string, std::string>& puts) const;

  // Whole objects. CreateExclusive: create (-EEXIST if it exists), write `data` and set the
  // extended attribute `xattr` to `value`, atomically. Touch: set `xattr` on an existing object
  // (-ENOENT if gone). Read: up to `length` bytes from offset 0 into `out`. ReadMany: the same
  // for several objects at once, their reads in flight together; `visit(i, rc, bytes)` is called
  // for each in order with its return code and bytes, which stay valid only during the call (they
  // are the received buffer itself: no copy).
  int CreateExclusive(const std::string& oid, std::string_view data, const std::string& xattr,
                      const std::string& value) const;
  int Touch(const std::string& oid, const std::string& xattr, const std::string& value) const;
  int Read(const std::string& oid, uint64_t length, std::string* out) const;
  using ReadVisitor = std::function<void(size_t i, int rc, std::string_view bytes)>;
  void ReadMany(const std::vector<std::string>& oids, uint64_t length,
                const ReadVisitor& visit) const;
  int WriteFull(const std::string& oid, std::string_view data) const;
  int GetXattrs(const std::string& oid, std::map<std::string, std::string>* attrs) const;
  // Size, mtime (seconds) and version (which any write moves).
  int Stat(const std::string& oid, uint64_t* size, int64_t* mtime_seconds, uint64_t* version) const;
  // Removes `oid` only if its version is still `version` (-ERANGE/-EOVERFLOW: it changed).
  int RemoveIfVersion(const std::string& oid, uint64_t version) const;
  // Every object name in this pool and namespace.
  int List(std::vector<std::string>* oids) const;

  // Advisory locks (cls lock) on `oid`.
  struct Locker {
    std::string client, cookie, address;
  };
  // `duration_seconds` 0: held until unlocked; else it expires unless locked again with
  // `renew` (which only extends a lock this client holds with this cookie).
  int LockExclusive(const std::string& oid, const std::string& name, const std::string& cookie,
                    const std::string& description, int duration_seconds = 0,
                    bool renew = false) const;
  int Unlock(const std::string& oid, const std::string& name, const std::string& cookie) const;
  int ListLockers(const std::string& oid, const std::string& name,
                  std::vector<Locker>* lockers) const;
  int BreakLock(const std::string& oid, const std::string& name, const std::string& client,
                const std::string& cookie) const;

 private:
  std::shared_ptr<PoolState> state_;
};

}  // namespace strata::rados
