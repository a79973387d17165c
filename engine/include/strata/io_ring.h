#pragma once
// An io_uring submission ring for an event loop: the file reads and writes of a burst of
// requests are queued here (by Volume::SubmitRead/SubmitWrite, or directly) and go to the kernel
// in one system call when the loop waits, and their completions run then. A lone
// operation and writes up to 64 KiB run as plain pread/pwrite instead (cheaper here; see
// io_ring.cc), their completions still at the next wait. Where io_uring is not available (an old
// kernel, a seccomp filter, kernel.io_uring_disabled, or STRATA_NO_IO_URING set) every operation
// runs that way, so the ring's users never take a second path.
//
// Thread-compatible: the thread that creates a ring owns it and makes every call on it (QueueCall's
// work runs on helper threads the ring starts the first time it is asked to).

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace strata {

class IoRing {
 public:
  // An operation in flight; owned by the caller and kept alive until Finish has run.
  class Op {
   public:
    virtual ~Op() = default;
    // Runs from Wait with the operation's result: bytes transferred, or -errno.
    virtual void Finish(int result) = 0;
  };

  // A ring with room for `depth` operations in flight (rounded up to a power of two).
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<IoRing>> Create(unsigned depth);
  virtual ~IoRing() = default;

  // Queues a positional read or write of `fd`. False when `depth` operations are in flight
  // already (nothing is queued then: wait, or do the I/O another way).
  virtual bool QueueRead(int fd, std::span<std::byte> out, uint64_t offset, Op* op) = 0;
  virtual bool QueueWrite(int fd, std::span<const std::byte> data, uint64_t offset, Op* op) = 0;
  // Runs `call` (work that blocks on something other than a local file, such as reads from a
  // remote store) on one of the ring's helper threads, so that a loop can have several at once;
  // `done` then runs with its result from Wait, on the owner's thread, like any completion.
  // `call` must be safe to run on another thread. False when `depth` operations are in flight
  // already (nothing is queued then).
  virtual bool QueueCall(absl::AnyInvocable<absl::Status() &&> call,
                         absl::AnyInvocable<void(absl::Status) &&> done) = 0;
  // Like QueueCall, for work the owner could do itself but that finishes sooner beside it (half
  // of a large read's cipher): queued only while a processor is idle, that is while fewer
  // rings of this process than it may run threads at once have had work in the last
  // kBusyWindowNs (a ring has work when its owner waits for or reaps operations in flight, or
  // asks for a spare call). False otherwise, or when full (nothing is queued then: the owner
  // does the work).
  virtual bool QueueSpareCall(absl::AnyInvocable<absl::Status() &&> call,
                              absl::AnyInvocable<void(absl::Status) &&> done) = 0;
  // How long a ring counts as busy after it last had work: longer than a loop's wait for its
  // client's next burst, so two connections that keep the processors busy both count.
  static constexpr int64_t kBusyWindowNs = 2'000'000;
  // Starts work that completes by itself (an asynchronous librados call): `start` runs now, on
  // the owner's thread, with `complete`, which the work calls exactly once, from any thread,
  // with its result (bytes transferred, or -errno); `op`'s Finish then runs with that result
  // from Wait, like any completion. False when `depth` operations are in flight already
  // (nothing is started then).
  using Complete = absl::AnyInvocable<void(int) &&>;
  virtual bool QueueAsync(absl::AnyInvocable<void(Complete) &&> start, Op* op) = 0;
  // Submits what is queued and runs completions until at most `remaining` operations are still
  // in flight. Finish may queue further operations; they count as in flight.
  [[nodiscard]] virtual absl::Status Wait(unsigned remaining = 0) = 0;
  // Runs Finish of the operations that have completed, without submitting what is queued or
  // waiting. Returns how many are still running: in the kernel or on helper threads (queued
  // ones, which only Wait starts, do not count). A loop with work running can take its next
  // input meanwhile, and answer what finishes.
  virtual unsigned ReapCompleted() = 0;
  // Operations queued or submitted whose Finish has not run.
  virtual unsigned in_flight() const = 0;
  // False when this ring does its I/O synchronously (no io_uring here).
  virtual bool uses_io_uring() const = 0;
};

}  // namespace strata
