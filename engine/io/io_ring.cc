// IoRing: liburing, with a synchronous stand-in where the kernel offers no io_uring.

#include "strata/io_ring.h"

#include <liburing.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstdlib>
#include <utility>
#include <vector>

#include "io/errno.h"

namespace strata {
namespace {

class UringRing final : public IoRing {
 public:
  explicit UringRing(unsigned depth) : depth_(depth) {}
  ~UringRing() override {
    if (!initialized_) return;
    // Operations still in flight would write into memory their owners may free: wait first.
    (void)Wait(0);
    io_uring_queue_exit(&ring_);
  }

  int Init() {
    io_uring_params params{};
    // One thread submits and reaps; completions are delivered when it waits, not by
    // interrupting it (kernel 6.1+). Older kernels take the plain setup.
    params.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
    int r = io_uring_queue_init_params(depth_, &ring_, &params);
    if (r == -EINVAL) {
      params = {};
      r = io_uring_queue_init_params(depth_, &ring_, &params);
    }
    initialized_ = r == 0;
    return r;
  }

  bool QueueRead(int fd, std::span<std::byte> out, uint64_t offset, Op* op) override {
    io_uring_sqe* sqe = NextSqe();
    if (sqe == nullptr) return false;
    io_uring_prep_read(sqe, fd, out.data(), static_cast<unsigned>(out.size()), offset);
    io_uring_sqe_set_data(sqe, op);
    return true;
  }

  bool QueueWrite(int fd, std::span<const std::byte> data, uint64_t offset, Op* op) override {
    io_uring_sqe* sqe = NextSqe();
    if (sqe == nullptr) return false;
    io_uring_prep_write(sqe, fd, data.data(), static_cast<unsigned>(data.size()), offset);
    io_uring_sqe_set_data(sqe, op);
    return true;
  }

  absl::Status Submit() override {
    for (;;) {
      const int r = io_uring_submit(&ring_);
      if (r >= 0) return absl::OkStatus();
      if (r != -EINTR) return io::ErrnoToStatus(-r, "io_uring submit");
    }
  }

  absl::Status Wait(unsigned remaining) override {
    while (in_flight_ > remaining) {
      const int r = io_uring_submit_and_wait(&ring_, 1);
      if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY) {
        return io::ErrnoToStatus(-r, "io_uring wait");
      }
      Reap();
    }
    return absl::OkStatus();
  }

  unsigned in_flight() const override { return in_flight_; }
  bool uses_io_uring() const override { return true; }

 private:
  io_uring_sqe* NextSqe() {
    if (in_flight_ >= depth_) return nullptr;
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (sqe == nullptr) {  // The submission queue is full of queued entries: send them.
      if (!Submit().ok()) return nullptr;
      sqe = io_uring_get_sqe(&ring_);
      if (sqe == nullptr) return nullptr;
    }
    ++in_flight_;
    return sqe;
  }

  // Runs the completions that have arrived. They are taken off the queue before any Finish
  // runs, so a Finish may queue new operations.
  void Reap() {
    io_uring_cqe* cqes[64];
    for (;;) {
      const unsigned n = io_uring_peek_batch_cqe(&ring_, cqes, std::size(cqes));
      if (n == 0) return;
      std::pair<Op*, int> done[std::size(cqes)];
      for (unsigned i = 0; i < n; ++i) {
        done[i] = {static_cast<Op*>(io_uring_cqe_get_data(cqes[i])), cqes[i]->res};
      }
      io_uring_cq_advance(&ring_, n);
      in_flight_ -= n;
      for (unsigned i = 0; i < n; ++i) done[i].first->Finish(done[i].second);
    }
  }

  const unsigned depth_;
  io_uring ring_{};
  bool initialized_ = false;
  unsigned in_flight_ = 0;
};

// Where io_uring cannot be set up: each operation runs as it is queued; Wait runs completions.
class SyncRing final : public IoRing {
 public:
  explicit SyncRing(unsigned depth) : depth_(depth) {
    done_.reserve(depth);
    running_.reserve(depth);
  }
  ~SyncRing() override { (void)Wait(0); }

  bool QueueRead(int fd, std::span<std::byte> out, uint64_t offset, Op* op) override {
    if (done_.size() >= depth_) return false;
    size_t n = 0;
    int result = 0;
    while (n < out.size()) {
      const ssize_t r = ::pread(fd, out.data() + n, out.size() - n, static_cast<off_t>(offset + n));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) {
        result = r < 0 ? -errno : 0;
        break;
      }
      n += static_cast<size_t>(r);
    }
    done_.emplace_back(op, result < 0 ? result : static_cast<int>(n));
    return true;
  }

  bool QueueWrite(int fd, std::span<const std::byte> data, uint64_t offset, Op* op) override {
    if (done_.size() >= depth_) return false;
    size_t n = 0;
    int result = 0;
    while (n < data.size()) {
      const ssize_t r =
          ::pwrite(fd, data.data() + n, data.size() - n, static_cast<off_t>(offset + n));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) {
        result = r < 0 ? -errno : 0;
        break;
      }
      n += static_cast<size_t>(r);
    }
    done_.emplace_back(op, result < 0 ? result : static_cast<int>(n));
    return true;
  }

  absl::Status Submit() override { return absl::OkStatus(); }

  absl::Status Wait(unsigned remaining) override {
    while (done_.size() > remaining) {
      running_.swap(done_);  // Finish may queue more into done_.
      for (const auto& [op, result] : running_) op->Finish(result);
      running_.clear();
    }
    return absl::OkStatus();
  }

  unsigned in_flight() const override { return static_cast<unsigned>(done_.size()); }
  bool uses_io_uring() const override { return false; }

 private:
  const unsigned depth_;
  std::vector<std::pair<Op*, int>> done_;     // Done, Finish not run yet.
  std::vector<std::pair<Op*, int>> running_;  // Whose Finish is running.
};

}  // namespace

absl::StatusOr<std::unique_ptr<IoRing>> IoRing::Create(unsigned depth) {
  if (depth == 0 || depth > 4096) {
    return absl::InvalidArgumentError("an IoRing holds 1 to 4096 operations");
  }
  depth = std::bit_ceil(depth);
  if (getenv("STRATA_NO_IO_URING") == nullptr) {
    auto ring = std::make_unique<UringRing>(depth);
    if (ring->Init() == 0) return ring;
  }
  return std::make_unique<SyncRing>(depth);
}

}  // namespace strata
