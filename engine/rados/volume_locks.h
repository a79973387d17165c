#pragma once
// The exclusive locks of the volumes whose heads are in RADOS: one writer per volume, by Ceph's
// means (docs/ceph.md, "Volumes on RADOS"). Like pool.h, this header names no librados type.
//
// Volume V's lock is a cls "lock" named "strata.volume" on object "volume.V" in the index pool,
// cookie = the holding node's id, held as a lease of `term_seconds` that a thread renews every
// third of it. The object's omap key "owner" names the holder, its client address and name
// ("node TAB address TAB client") until it releases the lock cleanly. A node that dies stops
// renewing: the lease lapses, and the next node to take the lock first blocklists the dead holder's
// address in the cluster, so a write it still had in flight (or sends late, cut off from the
// cluster) is refused by the OSDs. A live holder is asked to hand a volume over by a notify on the
// object (its watch passes the request to the region, which releases the volume if nothing uses
// it).

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "rados/pool.h"

namespace strata::rados {

class Cluster;
class VolumeWatch;  // A watch on one lock object (volume_locks.cc).

class VolumeLocks {
 public:
  // Who holds (or last held without releasing) a volume's lock.
  struct Owner {
    std::string node;
    std::string address;  // Its librados client address.
    std::string client;   // Its librados client name ("client.<id>").
    bool live = false;    // It holds the lock now (its lease has not lapsed).
  };
  // Called on the renewal thread, never under a librados callback, when another node asks for
  // `volume_id`: release it (Release) if nothing uses it, else do nothing.
  using ReleaseRequest = std::function<void(const std::string& volume_id)>;

  VolumeLocks(Cluster* cluster, Pool index, std::string node_id, uint32_t term_seconds);
  // Stops renewing and watching; the locks stay until their leases lapse (a clean stop calls
  // Release for each volume first).
  ~VolumeLocks();
  VolumeLocks(const VolumeLocks&) = delete;
  VolumeLocks& operator=(const VolumeLocks&) = delete;

  // Sets what handles requests; returns once no request is being handled with the previous one
  // (so clearing it before a region closes leaves no hand-over running).
  void set_release_request(ReleaseRequest on_request);
  static std::string ObjectName(const std::string& volume_id) { return "volume." + volume_id; }
  uint32_t term_seconds() const { return term_seconds_; }

  // Takes volume `volume_id`'s lock for this node. A lease left by a holder that did not
  // release (dead, or this node's previous process) is fenced first: its address is blocklisted
  // and the cluster's newest map awaited. A live holder's lock is broken the same way only when
  // `force`; otherwise -EBUSY, with `holder` filled. Librados codes otherwise.
  int Acquire(const std::string& volume_id, bool force, Owner* holder);
  // Releases the lock cleanly (the owner record goes with it).
  int Release(const std::string& volume_id);
  // Releases and removes the lock object (the volume is deleted).
  int Remove(const std::string& volume_id);
  // The current or last holder (empty node: never held, or released cleanly).
  int GetOwner(const std::string& volume_id, Owner* owner) const;
  // Asks the live holder to release (a notify), then waits up to `timeout_ms` for the lock to
  // be free. 0 when it is; -EBUSY when the holder kept it.
  int RequestRelease(const std::string& volume_id, uint32_t timeout_ms);
  // Whether this node holds the lock, and still did at its last renewal.
  bool Holds(const std::string& volume_id) const;

 private:
  friend class VolumeWatch;
  void RenewLoop();
  void OnNotify(const std::string& volume_id);
  int WriteOwner(const std::string& oid);

  Cluster* const cluster_;
  Pool pool_;
  const std::string node_id_;
  const uint32_t term_seconds_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  ReleaseRequest on_request_;                                 // Guarded by mu_.
  std::map<std::string, std::unique_ptr<VolumeWatch>> held_;  // Guarded by mu_.
  std::set<std::string> lost_;                                // Renewal failed. Guarded by mu_.
  std::vector<std::string> requests_;                         // Guarded by mu_.
  bool stop_ = false;                                         // Guarded by mu_.
  bool handling_ = false;  // on_request_ is running (renewal thread). Guarded by mu_.
  std::thread renewer_;
};

}  // namespace strata::rados
