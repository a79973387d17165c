// HeadObjects: a volume head as RADOS objects (compiled as C++17; see head_objects.h).
#include "rados/head_objects.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>

#include "rados/librados.hpp"
#include "rados/pool_state.h"

namespace strata::rados {

// Writes to one object waiting for the one in flight to it (sent together next).
struct QueuedWrite {
  uint64_t seq = 0;
  uint64_t at = 0;
  librados::bufferlist data;
};
struct HeadObjects::ObjectWrites {
  int in_flight = 0;
  std::vector<QueuedWrite> queued;
};

// One aio operation: the queued writes of one object, applied in order.
struct InFlightWrite {
  HeadObjects* head = nullptr;
  uint64_t index = 0;
  std::vector<uint64_t> seqs;
  uint64_t bytes = 0;
  librados::ObjectWriteOperation op;  // Holds the buffers until the operation completes.
  librados::AioCompletion* completion = nullptr;
};

HeadObjects::HeadObjects(Pool pool, std::string volume_id)
    : pool_(std::move(pool)), volume_id_(std::move(volume_id)) {}

HeadObjects::~HeadObjects() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return pending_.empty(); });
  ReleaseDoneLocked();
}

std::string HeadObjects::ObjectName(const std::string& volume_id, uint64_t index) {
  return "head." + volume_id + "." + std::to_string(index);
}

bool HeadObjects::ParseObjectName(const std::string& oid, std::string* volume_id) {
  constexpr std::string_view kPrefix = "head.";
  if (oid.compare(0, kPrefix.size(), kPrefix) != 0) return false;
  const size_t dot = oid.rfind('.');
  if (dot <= kPrefix.size() || dot + 1 == oid.size()) return false;
  if (oid.find_first_not_of("0123456789", dot + 1) != std::string::npos) return false;
  *volume_id = oid.substr(kPrefix.size(), dot - kPrefix.size());
  return true;
}

template <typename Fn>
int HeadObjects::ForEachObject(uint64_t offset, uint64_t length, Fn fn) {
  for (uint64_t pos = offset; pos < offset + length;) {
    const uint64_t index = pos / kHeadObjectBytes;
    const uint64_t in_object = pos % kHeadObjectBytes;
    const uint64_t n = std::min(kHeadObjectBytes - in_object, offset + length - pos);
    if (int rc = fn(index, in_object, pos - offset, n); rc < 0) return rc;
    pos += n;
  }
  return 0;
}

int HeadObjects::Read(uint64_t offset, char* out, uint64_t length) {
  Kick(offset, length);  // A write still queued here goes out before the read.
  librados::IoCtx& io = pool_.state()->ioctx;
  return ForEachObject(
      offset, length, [&](uint64_t index, uint64_t at, uint64_t start, uint64_t n) {
        librados::bufferlist bl;
        const int rc = io.read(ObjectName(volume_id_, index), bl, n, at);
        if (rc < 0 && rc != -ENOENT) return rc;
        const uint64_t got = rc < 0 ? 0 : std::min<uint64_t>(bl.length(), n);
        if (got > 0) bl.begin().copy(static_cast<unsigned>(got), out + start);
        std::memset(out + start + got, 0, n - got);  // Past the object's end: never written.
        return 0;
      });
}

namespace {

// The pieces of one asynchronous read, one per object it touches.
struct AsyncRead {
  struct Piece {
    AsyncRead* read = nullptr;
    char* out = nullptr;
    uint64_t length = 0;
    librados::bufferlist data;
    librados::AioCompletion* completion = nullptr;
  };
  std::vector<Piece> pieces;
  std::atomic<size_t> outstanding{0};
  std::atomic<int> failure{0};
  std::function<void(int)> done;

  static void Landed(void* /*completion*/, void* arg) {
    auto* piece = static_cast<Piece*>(arg);
    AsyncRead* read = piece->read;
    const int rc = piece->completion->get_return_value();
    if (rc < 0 && rc != -ENOENT) {
      int expected = 0;
      read->failure.compare_exchange_strong(expected, rc);
    } else {
      const uint64_t got = rc < 0 ? 0 : std::min<uint64_t>(piece->data.length(), piece->length);
      if (got > 0) piece->data.begin().copy(static_cast<unsigned>(got), piece->out);
      std::memset(piece->out + got, 0, piece->length - got);  // Never written.
    }
    // librados holds its own reference to the completion while this callback runs.
    piece->completion->release();
    if (read->outstanding.fetch_sub(1) == 1) {
      std::function<void(int)> done = std::move(read->done);
      const int failure = read->failure.load();
      delete read;
      done(failure);
    }
  }
};

}  // namespace

void HeadObjects::ReadAsync(uint64_t offset, char* out, uint64_t length,
                            std::function<void(int)> done) {
  Kick(offset, length);  // A write still queued here goes out before the read.
  auto* read = new AsyncRead;
  read->done = std::move(done);
  (void)ForEachObject(offset, length, [&](uint64_t, uint64_t, uint64_t start, uint64_t n) {
    read->pieces.push_back({read, out + start, n, {}, nullptr});
    return 0;
  });
  if (read->pieces.empty()) {
    std::function<void(int)> finish = std::move(read->done);
    delete read;
    finish(0);
    return;
  }
  read->outstanding = read->pieces.size();
  librados::IoCtx& io = pool_.state()->ioctx;
  size_t i = 0;
  (void)ForEachObject(offset, length, [&](uint64_t index, uint64_t at, uint64_t, uint64_t n) {
    AsyncRead::Piece& piece = read->pieces[i++];
    piece.completion = librados::Rados::aio_create_completion(&piece, &AsyncRead::Landed);
    if (int rc = io.aio_read(ObjectName(volume_id_, index), piece.completion, &piece.data, n, at);
        rc < 0) {
      // Not submitted: its callback never runs; count it here.
      piece.completion->release();
      int expected = 0;
      read->failure.compare_exchange_strong(expected, rc);
      if (read->outstanding.fetch_sub(1) == 1) {
        std::function<void(int)> finish = std::move(read->done);
        const int failure = read->failure.load();
        delete read;
        finish(failure);
        return -1;  // Stop: `read` is gone.
      }
    }
    return 0;
  });
}

int HeadObjects::Write(uint64_t offset, const char* data, uint64_t length) {
  return ForEachObject(
      offset, length, [&](uint64_t index, uint64_t at, uint64_t start, uint64_t n) {
        QueuedWrite write;
        write.at = at;
        write.data.append(data + start, n);
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] {
          return pending_.empty() ||
                 (pending_.size() < kMaxPending && pending_bytes_ + n <= kMaxPendingBytes);
        });
        ReleaseDoneLocked();
        write.seq = next_seq_++;
        pending_.insert(write.seq);
        pending_bytes_ += n;
        std::unique_ptr<ObjectWrites>& slot = objects_[index];
        if (slot == nullptr) slot = std::make_unique<ObjectWrites>();
        ObjectWrites& object = *slot;
        object.queued.push_back(std::move(write));
        // While a write to this object is in flight, later ones wait and go out together when it
        // completes: one operation on the OSDs for many small writes (RADOS applies them in order).
        if (object.in_flight == 0) SendLocked(index, object);
        return 0;
      });
}

void HeadObjects::SendLocked(uint64_t index, ObjectWrites& object) {
  auto write = std::make_unique<InFlightWrite>();
  write->head = this;
  write->index = index;
  for (QueuedWrite& q : object.queued) {
    write->seqs.push_back(q.seq);
    write->bytes += q.data.length();
    write->op.write(q.at, q.data);
  }
  object.queued.clear();
  write->completion = librados::Rados::aio_create_completion(write.get(), &HeadObjects::Done);
  const int rc = pool_.state()->ioctx.aio_operate(ObjectName(volume_id_, index), write->completion,
                                                  &write->op);
  if (rc < 0) {  // Not sent: its callback never runs.
    if (failure_ == 0) failure_ = rc;
    for (uint64_t seq : write->seqs) pending_.erase(seq);
    pending_bytes_ -= write->bytes;
    done_.push_back(write.release());
    cv_.notify_all();
    return;
  }
  ++object.in_flight;
  write.release();  // Done() owns it now.
}

void HeadObjects::KickLocked(uint64_t first, uint64_t last) {
  for (auto it = objects_.lower_bound(first); it != objects_.end() && it->first <= last; ++it) {
    if (!it->second->queued.empty()) SendLocked(it->first, *it->second);
  }
}

void HeadObjects::Kick(uint64_t offset, uint64_t length) {
  if (length == 0) return;
  std::lock_guard<std::mutex> lock(mu_);
  KickLocked(offset / kHeadObjectBytes, (offset + length - 1) / kHeadObjectBytes);
}

void HeadObjects::Done(void* /*completion*/, void* arg) {
  auto* write = static_cast<InFlightWrite*>(arg);
  HeadObjects* head = write->head;
  const int rc = write->completion->get_return_value();
  std::lock_guard<std::mutex> lock(head->mu_);
  if (rc < 0 && head->failure_ == 0) head->failure_ = rc;
  for (uint64_t seq : write->seqs) head->pending_.erase(seq);
  head->pending_bytes_ -= write->bytes;
  auto it = head->objects_.find(write->index);
  if (it != head->objects_.end()) {
    ObjectWrites& object = *it->second;
    --object.in_flight;
    if (!object.queued.empty() && object.in_flight == 0) {
      head->SendLocked(it->first, object);
    } else if (object.queued.empty() && object.in_flight == 0) {
      head->objects_.erase(it);
    }
  }
  // Released by the next Write or Flush, outside librados's callback.
  head->done_.push_back(write);
  head->cv_.notify_all();
}

void HeadObjects::ReleaseDoneLocked() {
  for (InFlightWrite* write : done_) {
    write->completion->release();
    delete write;
  }
  done_.clear();
}

int HeadObjects::ExistingObjects(const Pool& pool, const std::string& volume_id, uint64_t first,
                                 uint64_t last, std::vector<uint64_t>* indexes) {
  std::vector<std::string> oids;
  if (int rc = pool.List(&oids); rc < 0) return rc;
  const std::string prefix = ObjectName(volume_id, 0);
  const std::string stem = prefix.substr(0, prefix.size() - 1);  // "head.<volume>."
  for (const std::string& oid : oids) {
    if (oid.compare(0, stem.size(), stem) != 0) continue;
    std::string id;
    if (!ParseObjectName(oid, &id) || id != volume_id) continue;
    const uint64_t index = std::stoull(oid.substr(stem.size()));
    if (index >= first && index <= last) indexes->push_back(index);
  }
  return 0;
}

int HeadObjects::RemoveObjects(const Pool& pool, const std::string& volume_id, uint64_t first,
                               uint64_t last) {
  // A huge range (a 64 TiB volume has 16 Mi objects) removes only the objects that exist.
  std::vector<uint64_t> indexes;
  if (last - first + 1 > kListThreshold) {
    if (int rc = ExistingObjects(pool, volume_id, first, last, &indexes); rc < 0) return rc;
  } else {
    for (uint64_t i = first; i <= last; ++i) indexes.push_back(i);
  }
  librados::IoCtx& io = pool.state()->ioctx;
  std::deque<librados::AioCompletion*> removes;
  int failure = 0;
  auto finish = [&](librados::AioCompletion* c) {
    c->wait_for_complete();
    const int rc = c->get_return_value();
    c->release();
    if (rc < 0 && rc != -ENOENT && failure == 0) failure = rc;
  };
  for (uint64_t i : indexes) {
    librados::AioCompletion* c = librados::Rados::aio_create_completion();
    if (int rc = io.aio_remove(ObjectName(volume_id, i), c); rc < 0) {
      c->release();
      if (failure == 0) failure = rc;
      continue;
    }
    removes.push_back(c);
    if (removes.size() >= kMaxInFlight) finish(removes.front()), removes.pop_front();
  }
  for (librados::AioCompletion* c : removes) finish(c);
  return failure;
}

int HeadObjects::Zero(uint64_t offset, uint64_t length) {
  if (length == 0) return 0;
  Kick(offset, length);  // Queued writes go out first: the zeroing applies after them.
  librados::IoCtx& io = pool_.state()->ioctx;
  // Objects covered whole are removed; the partly covered ones at either end are zeroed.
  const uint64_t end = offset + length;
  const uint64_t first_whole = (offset + kHeadObjectBytes - 1) / kHeadObjectBytes;
  const uint64_t end_whole = end / kHeadObjectBytes;  // Exclusive.
  auto zero_part = [&](uint64_t from, uint64_t to) {
    if (from >= to) return 0;
    librados::ObjectWriteOperation op;
    op.assert_exists();  // Zeroing a missing object would create it.
    op.zero(from % kHeadObjectBytes, to - from);
    const int rc = io.operate(ObjectName(volume_id_, from / kHeadObjectBytes), &op);
    return rc == -ENOENT ? 0 : rc;
  };
  if (first_whole >= end_whole) {  // Within one or two objects, none covered whole.
    const uint64_t split = std::min(end, (offset / kHeadObjectBytes + 1) * kHeadObjectBytes);
    if (int rc = zero_part(offset, split); rc < 0) return rc;
    return zero_part(split, end);
  }
  if (int rc = zero_part(offset, first_whole * kHeadObjectBytes); rc < 0) return rc;
  if (int rc = zero_part(end_whole * kHeadObjectBytes, end); rc < 0) return rc;
  return RemoveObjects(pool_, volume_id_, first_whole, end_whole - 1);
}

int HeadObjects::Flush() {
  std::unique_lock<std::mutex> lock(mu_);
  const uint64_t target = next_seq_;
  KickLocked(0, UINT64_MAX);
  // Every write queued before this call, whatever was queued after it.
  cv_.wait(lock, [&] { return pending_.empty() || *pending_.begin() >= target; });
  ReleaseDoneLocked();
  return failure_;
}

int HeadObjects::RemoveAll(const Pool& pool, const std::string& volume_id, uint64_t size_bytes) {
  if (size_bytes == 0) return 0;
  return RemoveObjects(pool, volume_id, 0, (size_bytes - 1) / kHeadObjectBytes);
}

}  // namespace strata::rados
