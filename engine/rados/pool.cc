// Pool: the RADOS backend's object operations on librados's C++ API (compiled as C++17; see
// pool.h).
#include "rados/pool.h"

#include <sys/time.h>

#include <cerrno>
#include <ctime>
#include <list>

#include "rados/librados.hpp"
#include "rados/pool_state.h"

namespace strata::rados {
namespace {

librados::bufferlist ToBuffer(std::string_view s) {
  librados::bufferlist bl;
  bl.append(s.data(), s.size());
  return bl;
}

}  // namespace

Pool::Pool(std::shared_ptr<PoolState> state) : state_(std::move(state)) {}
Pool::~Pool() = default;

const std::string& Pool::name_space() const { return state_->name_space; }

int Pool::OmapGet(const std::string& oid, const std::set<std::string>& keys,
                  std::map<std::string, std::string>* values) const {
  librados::ObjectReadOperation op;
  std::map<std::string, librados::bufferlist> found;
  int rval = 0;
  op.omap_get_vals_by_keys(keys, &found, &rval);
  const int rc = state_->ioctx.operate(oid, &op, nullptr);
  if (rc == -ENOENT) return 0;
  if (rc < 0) return rc;
  for (auto& [key, value] : found) (*values)[key] = value.to_str();
  return rval;
}

int Pool::OmapList(const std::string& oid, const std::string& after, const std::string& prefix,
                   uint64_t max, std::map<std::string, std::string>* values, bool* more) const {
  librados::ObjectReadOperation op;
  std::map<std::string, librados::bufferlist> found;
  int rval = 0;
  *more = false;
  op.omap_get_vals2(after, prefix, max, &found, more, &rval);
  const int rc = state_->ioctx.operate(oid, &op, nullptr);
  if (rc == -ENOENT) {
    *more = false;
    return 0;
  }
  if (rc < 0) return rc;
  for (auto& [key, value] : found) (*values)[key] = value.to_str();
  return rval;
}

int Pool::OmapWrite(const std::string& oid, const std::map<std::string, std::string>& guards,
                    const std::set<std::string>& deletes,
                    const std::map<std::string, std::string>& puts) const {
  librados::ObjectWriteOperation op;
  op.create(false);
  int cmp_rval = 0;
  if (!guards.empty()) {
    std::map<std::string, std::pair<librados::bufferlist, int>> assertions;
    for (const auto& [key, value] : guards) {
      assertions[key] = {ToBuffer(value), LIBRADOS_CMPXATTR_OP_EQ};
    }
    op.omap_cmp(assertions, &cmp_rval);
  }
  if (!deletes.empty()) op.omap_rm_keys(deletes);
  if (!puts.empty()) {
    std::map<std::string, librados::bufferlist> values;
    for (const auto& [key, value] : puts) values[key] = ToBuffer(value);
    op.omap_set(values);
  }
  return state_->ioctx.operate(oid, &op);
}

int Pool::CreateExclusive(const std::string& oid, std::string_view data, const std::string& xattr,
                          const std::string& value) const {
  librados::ObjectWriteOperation op;
  op.create(true);
  op.write_full(ToBuffer(data));
  op.setxattr(xattr.c_str(), ToBuffer(value));
  return state_->ioctx.operate(oid, &op);
}

int Pool::Touch(const std::string& oid, const std::string& xattr, const std::string& value) const {
  librados::ObjectWriteOperation op;
  op.assert_exists();
  op.setxattr(xattr.c_str(), ToBuffer(value));
  return state_->ioctx.operate(oid, &op);
}

int Pool::Read(const std::string& oid, uint64_t length, std::string* out) const {
  librados::bufferlist bl;
  const int rc = state_->ioctx.read(oid, bl, length, 0);
  if (rc >= 0) *out = bl.to_str();
  return rc;
}

void Pool::ReadMany(const std::vector<std::string>& oids, uint64_t length,
                    const ReadVisitor& visit) const {
  std::vector<librados::bufferlist> buffers(oids.size());
  std::vector<librados::AioCompletion*> reads(oids.size(), nullptr);
  std::vector<int> results(oids.size(), 0);
  for (size_t i = 0; i < oids.size(); ++i) {
    reads[i] = librados::Rados::aio_create_completion();
    results[i] = state_->ioctx.aio_read(oids[i], reads[i], &buffers[i], length, 0);
  }
  for (size_t i = 0; i < oids.size(); ++i) {
    if (results[i] == 0) {  // Submitted: its completion fires.
      reads[i]->wait_for_complete();
      results[i] = reads[i]->get_return_value();
    }
    reads[i]->release();
    // c_str() copies only a reply that arrived in several pieces.
    std::string_view bytes;
    if (results[i] >= 0 && buffers[i].length() > 0) {
      bytes = std::string_view(buffers[i].c_str(), buffers[i].length());
    }
    visit(i, results[i], bytes);
  }
}

int Pool::WriteFull(const std::string& oid, std::string_view data) const {
  librados::bufferlist bl = ToBuffer(data);
  return state_->ioctx.write_full(oid, bl);
}

int Pool::GetXattrs(const std::string& oid, std::map<std::string, std::string>* attrs) const {
  std::map<std::string, librados::bufferlist> found;
  const int rc = state_->ioctx.getxattrs(oid, found);
  for (auto& [name, value] : found) (*attrs)[name] = value.to_str();
  return rc;
}

int Pool::Stat(const std::string& oid, uint64_t* size, int64_t* mtime_seconds,
               uint64_t* version) const {
  // Through an operation with its own completion: the version of *this* operation, whatever
  // other threads do on the I/O context.
  librados::ObjectReadOperation op;
  struct timespec mtime {};
  int rval = 0;
  op.stat2(size, &mtime, &rval);
  librados::AioCompletion* done = librados::Rados::aio_create_completion();
  int rc = state_->ioctx.aio_operate(oid, done, &op, nullptr);
  if (rc == 0) {
    done->wait_for_complete();
    rc = done->get_return_value();
  }
  *version = done->get_version64();
  done->release();
  *mtime_seconds = mtime.tv_sec;
  return rc < 0 ? rc : rval;
}

int Pool::RemoveIfVersion(const std::string& oid, uint64_t version) const {
  librados::ObjectWriteOperation op;
  op.assert_version(version);
  op.remove();
  return state_->ioctx.operate(oid, &op);
}

int Pool::List(std::vector<std::string>* oids) const {
  try {
    for (auto it = state_->ioctx.nobjects_begin(); it != state_->ioctx.nobjects_end(); ++it) {
      oids->push_back(it->get_oid());
    }
  } catch (const std::exception&) {  // librados reports listing errors by exception.
    return -EIO;
  }
  return 0;
}

int Pool::LockExclusive(const std::string& oid, const std::string& name, const std::string& cookie,
                        const std::string& description, int duration_seconds, bool renew) const {
  timeval duration{duration_seconds, 0};
  return state_->ioctx.lock_exclusive(oid, name, cookie, description,
                                      duration_seconds > 0 ? &duration : nullptr,
                                      renew ? LIBRADOS_LOCK_FLAG_MUST_RENEW : 0);
}

int Pool::Unlock(const std::string& oid, const std::string& name, const std::string& cookie) const {
  return state_->ioctx.unlock(oid, name, cookie);
}

int Pool::ListLockers(const std::string& oid, const std::string& name,
                      std::vector<Locker>* lockers) const {
  int exclusive = 0;
  std::string tag;
  std::list<librados::locker_t> found;
  const int rc = state_->ioctx.list_lockers(oid, name, &exclusive, &tag, &found);
  for (const librados::locker_t& l : found) lockers->push_back({l.client, l.cookie, l.address});
  return rc;
}

int Pool::BreakLock(const std::string& oid, const std::string& name, const std::string& client,
                    const std::string& cookie) const {
  return state_->ioctx.break_lock(oid, name, client, cookie);
}

}  // namespace strata::rados
