// VolumeLocks: cls lock leases, watch/notify hand-over and blocklist fencing (compiled as C++17;
// see volume_locks.h).
#include "rados/volume_locks.h"

#include <cerrno>
#include <chrono>

#include "rados/cluster.h"
#include "rados/librados.hpp"
#include "rados/pool_state.h"
#include "util/log.h"

namespace strata::rados {
namespace {

constexpr char kLockName[] = "strata.volume";
constexpr char kOwnerKey[] = "owner";
constexpr char kReleaseMessage[] = "release";
// A fenced holder stays refused this long: far beyond any lease or stuck write.
constexpr uint32_t kBlocklistSeconds = 24 * 3600;

}  // namespace

// The watch a holder keeps on its lock object: a notify from another node is a request to hand
// the volume over. Acknowledged at once; the renewal thread does the rest.
class VolumeWatch final : public librados::WatchCtx2 {
 public:
  VolumeWatch(VolumeLocks* locks, std::string volume_id)
      : locks_(locks), volume_id_(std::move(volume_id)) {}
  ~VolumeWatch() override { Unwatch(); }

  int Watch() {
    return locks_->pool_.state()->ioctx.watch2(VolumeLocks::ObjectName(volume_id_), &handle_, this);
  }
  void Unwatch() {
    if (handle_ != 0) (void)locks_->pool_.state()->ioctx.unwatch2(handle_);
    handle_ = 0;
  }
  void handle_notify(uint64_t notify_id, uint64_t cookie, uint64_t,
                     librados::bufferlist&) override {
    librados::bufferlist reply;
    locks_->pool_.state()->ioctx.notify_ack(VolumeLocks::ObjectName(volume_id_), notify_id, cookie,
                                            reply);
    locks_->OnNotify(volume_id_);
  }
  void handle_error(uint64_t, int err) override {
    STRATA_LOG(kWarning, "volume ", volume_id_, ": watch on its lock failed (", err,
               "); re-watching");
    Unwatch();
    (void)Watch();
  }

 private:
  VolumeLocks* const locks_;
  const std::string volume_id_;
  uint64_t handle_ = 0;
};

VolumeLocks::VolumeLocks(Cluster* cluster, Pool index, std::string node_id, uint32_t term_seconds)
    : cluster_(cluster),
      pool_(std::move(index)),
      node_id_(std::move(node_id)),
      term_seconds_(term_seconds < 3 ? 3 : term_seconds) {
  renewer_ = std::thread([this] { RenewLoop(); });
}

VolumeLocks::~VolumeLocks() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  renewer_.join();
  std::map<std::string, std::unique_ptr<VolumeWatch>> held;
  {
    std::lock_guard<std::mutex> lock(mu_);
    held.swap(held_);
  }
  held.clear();  // Unwatches outside mu_: a notify callback may be waiting for it.
}

void VolumeLocks::set_release_request(ReleaseRequest on_request) {
  std::unique_lock<std::mutex> lock(mu_);
  on_request_ = std::move(on_request);
  // A request being handled with the old function finishes first.
  cv_.wait(lock, [&] { return !handling_; });
}

int VolumeLocks::GetOwner(const std::string& volume_id, Owner* owner) const {
  const std::string oid = ObjectName(volume_id);
  std::map<std::string, std::string> values;
  if (int rc = pool_.OmapGet(oid, {kOwnerKey}, &values); rc < 0) return rc;
  *owner = Owner{};
  if (auto it = values.find(kOwnerKey); it != values.end()) {
    std::vector<std::string> fields;
    for (size_t start = 0;;) {
      const size_t tab = it->second.find('\t', start);
      fields.push_back(it->second.substr(start, tab - start));
      if (tab == std::string::npos) break;
      start = tab + 1;
    }
    fields.resize(3);
    owner->node = fields[0];
    owner->address = fields[1];
    owner->client = fields[2];
  }
  std::vector<Pool::Locker> lockers;
  int rc = pool_.ListLockers(oid, kLockName, &lockers);
  if (rc == -ENOENT) rc = 0;
  if (rc < 0) return rc;
  for (const Pool::Locker& l : lockers) {  // Expired leases are not listed.
    owner->live = true;
    owner->node = l.cookie;
    owner->address = l.address;
    owner->client = l.client;
  }
  return 0;
}

int VolumeLocks::WriteOwner(const std::string& oid) {
  std::vector<Pool::Locker> lockers;
  if (int rc = pool_.ListLockers(oid, kLockName, &lockers); rc < 0) return rc;
  for (const Pool::Locker& l : lockers) {
    if (l.cookie == node_id_ && l.client == cluster_->ClientName()) {
      return pool_.OmapWrite(oid, {}, {},
                             {{kOwnerKey, node_id_ + "\t" + l.address + "\t" + l.client}});
    }
  }
  return -ENOLCK;
}

int VolumeLocks::Acquire(const std::string& volume_id, bool force, Owner* holder) {
  const std::string oid = ObjectName(volume_id);
  if (Holds(volume_id)) return 0;
  for (int attempt = 0; attempt < 3; ++attempt) {
    Owner owner;
    if (int rc = GetOwner(volume_id, &owner); rc < 0) return rc;
    *holder = owner;
    // A live lock of another node is theirs unless forced; this node's own live lock is a lease
    // its previous process left (this process would hold it in held_): fenced like a dead one.
    if (owner.live && owner.node != node_id_ && !force) return -EBUSY;
    // This very client (another store of this process on the same node id), or one with its
    // address (a child forked from this process and dead since: librados draws the address's
    // nonce from a generator the fork copied): never fenced, which would fence this client.
    const std::string nonce = owner.address.substr(owner.address.rfind('/') + 1);
    const bool itself =
        owner.client == cluster_->ClientName() ||
        (!nonce.empty() && cluster_->ClientAddresses().find("/" + nonce) != std::string::npos);
    if (!owner.node.empty() && !owner.address.empty() && !itself) {
      // Held, or left without a release: fence that client before anyone writes again.
      STRATA_LOG(kWarning, "volume ", volume_id, ": fencing its previous holder, node ", owner.node,
                 " (client ", owner.address, ")");
      if (int rc = cluster_->Blocklist(owner.address, kBlocklistSeconds); rc < 0) return rc;
    }
    if (owner.live && owner.client != cluster_->ClientName()) {
      std::vector<Pool::Locker> lockers;
      (void)pool_.ListLockers(oid, kLockName, &lockers);
      for (const Pool::Locker& l : lockers) {
        (void)pool_.BreakLock(oid, kLockName, l.client, l.cookie);
      }
    }
    int rc = pool_.LockExclusive(oid, kLockName, node_id_, "strata volume writer",
                                 static_cast<int>(term_seconds_));
    if (rc == -EBUSY) continue;  // Another node took it meanwhile: look again.
    if (rc < 0 && rc != -EEXIST) return rc;
    if (rc = WriteOwner(oid); rc < 0) return rc;
    auto watch = std::make_unique<VolumeWatch>(this, volume_id);
    if (rc = watch->Watch(); rc < 0) {
      (void)pool_.Unlock(oid, kLockName, node_id_);
      return rc;
    }
    std::lock_guard<std::mutex> lock(mu_);
    held_[volume_id] = std::move(watch);
    lost_.erase(volume_id);
    return 0;
  }
  return -EBUSY;
}

int VolumeLocks::Release(const std::string& volume_id) {
  std::unique_ptr<VolumeWatch> watch;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = held_.find(volume_id);
    if (it == held_.end()) return 0;
    watch = std::move(it->second);
    held_.erase(it);
    lost_.erase(volume_id);
  }
  watch.reset();
  const std::string oid = ObjectName(volume_id);
  // The owner record first: a crash between the two leaves a lease that lapses with no one to
  // fence, which is right (this node wrote nothing after it).
  if (int rc = pool_.OmapWrite(oid, {}, {kOwnerKey}, {}); rc < 0) return rc;
  const int rc = pool_.Unlock(oid, kLockName, node_id_);
  return rc == -ENOENT ? 0 : rc;
}

int VolumeLocks::Remove(const std::string& volume_id) {
  if (int rc = Release(volume_id); rc < 0) return rc;
  const int rc = pool_.state()->ioctx.remove(ObjectName(volume_id));
  return rc == -ENOENT ? 0 : rc;
}

int VolumeLocks::RequestRelease(const std::string& volume_id, uint32_t timeout_ms) {
  librados::bufferlist message;
  message.append(kReleaseMessage);
  librados::bufferlist replies;
  const int notified =
      pool_.state()->ioctx.notify2(ObjectName(volume_id), message, timeout_ms, &replies);
  if (notified < 0 && notified != -ETIMEDOUT) return notified;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  do {
    Owner owner;
    if (int rc = GetOwner(volume_id, &owner); rc < 0) return rc;
    if (!owner.live) return 0;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  } while (std::chrono::steady_clock::now() < deadline);
  return -EBUSY;
}

bool VolumeLocks::Holds(const std::string& volume_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  return held_.count(volume_id) > 0 && lost_.count(volume_id) == 0;
}

void VolumeLocks::OnNotify(const std::string& volume_id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    requests_.push_back(volume_id);
  }
  cv_.notify_all();
}

void VolumeLocks::RenewLoop() {
  const auto period = std::chrono::milliseconds(term_seconds_ * 1000 / 3);
  auto next_renewal = std::chrono::steady_clock::now() + period;
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    cv_.wait_until(lock, next_renewal, [&] { return stop_ || !requests_.empty(); });
    if (stop_) break;
    std::vector<std::string> requests;
    requests.swap(requests_);
    ReleaseRequest on_request = on_request_;
    std::vector<std::string> held;
    const bool renew = std::chrono::steady_clock::now() >= next_renewal;
    if (renew) {
      for (const auto& [id, watch] : held_) held.push_back(id);
      next_renewal = std::chrono::steady_clock::now() + period;
    }
    const bool handling = on_request != nullptr && !requests.empty();
    handling_ = handling;
    lock.unlock();
    for (const std::string& id : requests) {
      if (on_request) on_request(id);
    }
    if (handling) {
      std::lock_guard<std::mutex> relock(mu_);
      handling_ = false;
      cv_.notify_all();
    }
    for (const std::string& id : held) {
      const int rc =
          pool_.LockExclusive(ObjectName(id), kLockName, node_id_, "strata volume writer",
                              static_cast<int>(term_seconds_), /*renew=*/true);
      if (rc < 0) {
        std::lock_guard<std::mutex> relock(mu_);
        if (held_.count(id) == 0) continue;  // Released meanwhile.
        lost_.insert(id);
        STRATA_LOG(kError, "volume ", id, ": renewing its lock failed (", rc,
                   "): another node may take it over");
      }
    }
    lock.lock();
  }
}

}  // namespace strata::rados
