#pragma once
// An IoRing wrapper that injects faults into queued file I/O, for tests of the asynchronous data
// path (Volume::SubmitRead / SubmitWrite): the n-th queued read or write fails with an errno,
// or one goes short, while the rest go to the wrapped ring.

#include <cstdint>
#include <memory>

#include "strata/io_ring.h"

namespace strata {

struct RingFault {
  // The operation completes with -error (EIO, ENOSPC); 0: it transfers half its bytes (whole
  // sectors) and reports that count, a short read or write whose caller must do the rest.
  int error = 0;
};

// Thread-compatible, like the ring it wraps (`base`, owned).
class FaultInjectionRing final : public IoRing {
 public:
  explicit FaultInjectionRing(std::unique_ptr<IoRing> base) : base_(std::move(base)) {}

  // The `n`-th queued read or write from now (0: the next) gets `fault`; later ones do not.
  void InjectAt(int64_t n, RingFault fault) {
    countdown_ = n;
    fault_ = fault;
  }
  // Reads and writes queued since construction.
  int64_t operations() const { return operations_; }

  bool QueueRead(int fd, std::span<std::byte> out, uint64_t offset, Op* op) override;
  bool QueueWrite(int fd, std::span<const std::byte> data, uint64_t offset, Op* op) override;
  bool QueueCall(absl::AnyInvocable<absl::Status() &&> call,
                 absl::AnyInvocable<void(absl::Status) &&> done) override {
    return base_->QueueCall(std::move(call), std::move(done));
  }
  bool QueueSpareCall(absl::AnyInvocable<absl::Status() &&> call,
                      absl::AnyInvocable<void(absl::Status) &&> done) override {
    return base_->QueueSpareCall(std::move(call), std::move(done));
  }
  bool QueueAsync(absl::AnyInvocable<void(Complete) &&> start, Op* op) override {
    return base_->QueueAsync(std::move(start), op);
  }
  absl::Status Wait(unsigned remaining = 0) override { return base_->Wait(remaining); }
  unsigned ReapCompleted() override { return base_->ReapCompleted(); }
  unsigned in_flight() const override { return base_->in_flight(); }
  bool uses_io_uring() const override { return base_->uses_io_uring(); }

 private:
  // The fault for the operation being queued, if it is the one.
  const RingFault* Next();

  const std::unique_ptr<IoRing> base_;
  int64_t countdown_ = -1;
  RingFault fault_;
  int64_t operations_ = 0;
};

}  // namespace strata
