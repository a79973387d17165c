#pragma once
// A volume head kept in RADOS: its bytes as objects "head.<volume>.<n>" of kHeadObjectBytes
// each in the data pool (docs/formats/rados.md, "Volume heads"). Thin: an object exists only
// once a byte of it was written; a missing object or range reads as zeros. Like pool.h, this
// header names no librados type (head_objects.cc does, as C++17).

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "rados/pool.h"

namespace strata::rados {

inline constexpr uint64_t kHeadObjectBytes = uint64_t{4} << 20;  // RBD's default object size.

struct InFlightWrite;  // An aio write and its buffer (head_objects.cc).

// Thread-safe. Writes are asynchronous (librados aio): Write returns once the write is sent,
// or queued behind the one in flight to its object (then the object's queued writes go out as
// one operation when that completes); at most kMaxPending writes and kMaxPendingBytes wait or
// fly at once. Flush sends what is queued and waits until every write made before it is
// acknowledged (durable on the OSDs). RADOS applies one client's operations on one object in
// order, and a read or a zeroing first sends the writes queued for its objects, so it sees
// them. The first failed write is reported by every later Flush (the writes after it may be
// missing): the head is trusted again only when reopened.
class HeadObjects {
 public:
  static constexpr size_t kMaxInFlight = 64;  // Removes in flight at once.
  static constexpr size_t kMaxPending = 512;
  static constexpr uint64_t kMaxPendingBytes = uint64_t{64} << 20;

  HeadObjects(Pool pool, std::string volume_id);
  ~HeadObjects();  // Waits for writes still in flight.
  HeadObjects(const HeadObjects&) = delete;
  HeadObjects& operator=(const HeadObjects&) = delete;

  static std::string ObjectName(const std::string& volume_id, uint64_t index);
  // Whether `oid` is one of a head's objects; sets `volume_id`.
  static bool ParseObjectName(const std::string& oid, std::string* volume_id);

  // Return codes are librados's (0 or -errno).
  int Read(uint64_t offset, char* out, uint64_t length);
  // Read, asynchronously: `done` runs once, on a librados thread, with 0 or -errno, when every
  // piece has landed in `out` (which must stay valid until then).
  void ReadAsync(uint64_t offset, char* out, uint64_t length, std::function<void(int)> done);
  int Write(uint64_t offset, const char* data, uint64_t length);
  // Zeros a range: objects it covers whole are removed, parts of others zeroed.
  int Zero(uint64_t offset, uint64_t length);
  int Flush();
  // Removes every object of a `size_bytes` head (missing ones are fine).
  static int RemoveAll(const Pool& pool, const std::string& volume_id, uint64_t size_bytes);

 private:
  // Calls fn(object index, offset in object, offset in the range, length) per object touched.
  template <typename Fn>
  static int ForEachObject(uint64_t offset, uint64_t length, Fn fn);
  // Objects in [first, last] counted one by one up to this many; past it, listed.
  static constexpr uint64_t kListThreshold = 4096;
  // The indexes in [first, last] of the head's objects that exist (a listing of the namespace).
  static int ExistingObjects(const Pool& pool, const std::string& volume_id, uint64_t first,
                             uint64_t last, std::vector<uint64_t>* indexes);
  // Removes the head's objects [first, last] (missing ones are fine).
  static int RemoveObjects(const Pool& pool, const std::string& volume_id, uint64_t first,
                           uint64_t last);
  struct ObjectWrites;  // Per object: writes in flight, and those queued behind them.
  // Sends an object's queued writes as one operation. REQUIRES: mu_ held.
  void SendLocked(uint64_t index, ObjectWrites& object);
  // Sends the queued writes of objects [first, last] (of the bytes [offset, +length)).
  void KickLocked(uint64_t first, uint64_t last);
  void Kick(uint64_t offset, uint64_t length);
  // librados's completion callback of a write (`arg`: its InFlightWrite).
  static void Done(void* completion, void* arg);
  void ReleaseDoneLocked();

  Pool pool_;
  const std::string volume_id_;
  std::mutex mu_;
  std::condition_variable cv_;  // Signalled as writes complete.
  uint64_t next_seq_ = 0;       // Guarded by mu_.
  std::set<uint64_t> pending_;  // Writes queued or in flight, by seq. Guarded by mu_.
  uint64_t pending_bytes_ = 0;  // Their bytes. Guarded by mu_.
  std::map<uint64_t, std::unique_ptr<ObjectWrites>> objects_;  // By object index. Guarded by mu_.
  std::vector<InFlightWrite*> done_;  // Completed, to release. Guarded by mu_.
  int failure_ = 0;                   // The first failed write's code. Guarded by mu_.
};

}  // namespace strata::rados
