#pragma once
// A connection's byte stream: a plain socket, or TLS over one once the client asked for
// STARTTLS. The session reads through a buffer so that pipelined requests cost one recv.

#include <sys/types.h>
#include <sys/uio.h>

#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "absl/time/time.h"

namespace strata::nbd {

// How a receive waits when nothing has arrived yet. kPollFirst suits a wait for the client's
// next request, which a client at queue depth 1 sends right after it took the last reply;
// kSleep suits the rest of a payload under way, which the client is still sending and which a
// poll would only take the processor from.
enum class RecvWait { kSleep, kPollFirst };

// What Transport::Splice did.
struct Spliced {
  enum Outcome {
    kMoved,           // `bytes` (at least one) are in the pipe.
    kNothingArrived,  // Without waiting: nothing has arrived.
    kPipeFull,        // The pipe has no room left (bytes have arrived).
    kEnd,             // The end of the stream.
    kFailed,          // An error.
  };
  Outcome outcome;
  size_t bytes = 0;
};

class Transport {
 public:
  virtual ~Transport() = default;
  // Reads at most `n` bytes: the count read, 0 at the end of the stream, negative on error.
  virtual ssize_t Recv(void* buf, size_t n, RecvWait wait) = 0;
  // Sends every piece in order. False when the connection failed.
  virtual bool Send(std::span<const iovec> pieces) = 0;
  // Reads at most `n` bytes without blocking: as Recv, or nullopt when nothing has arrived (or
  // the transport cannot tell without blocking).
  virtual std::optional<ssize_t> TryRecv(void* /*buf*/, size_t /*n*/) { return std::nullopt; }
  // Sends what the connection takes of `bytes` without blocking: the count sent (0 when it
  // would block, or the transport cannot send without blocking), negative on error.
  virtual ssize_t TrySend(std::span<const std::byte> /*bytes*/) { return 0; }
  // Whether Splice can move the connection's bytes into a pipe (a plain socket can; TLS
  // cannot, since its bytes must be deciphered first).
  virtual bool can_splice() const { return false; }
  // Moves at most `n` of the connection's next bytes into the pipe `pipe_fd` (its write end,
  // non-blocking) without copying them (splice(2)); with `wait`, sleeps until the first arrive.
  virtual Spliced Splice(int /*pipe_fd*/, size_t /*n*/, bool /*wait*/) {
    return {Spliced::kFailed};
  }
};

// A connected socket; does not own the descriptor. With a `poll` time, a receive that waits
// for the client's next request (RecvWait::kPollFirst) first tries again without blocking,
// yielding the processor between tries: a client that sends its next request within the poll
// (a VM at queue depth 1) is read without the sleep and the wake-up, which cost more than the
// polling on virtual machines (docs/benchmarks.md).
//
// The poll's length adapts to the client, as KVM's halt polling does: a sleep that lasted
// longer than `poll` (an idle client) halves the window, down to none; a sleep that a longer
// poll would have cut short doubles it again, up to `poll`. So an idle connection stops paying
// for the poll after a few waits, and a busy one keeps it.
//
// A poll that succeeds within an eighth of `poll` finds a client streaming requests (queue
// depth 32 sends them microseconds apart): the next kStreamingSleeps waits sleep instead, so
// that requests gather while the thread wakes and share one receive, one submission and one
// send. Polling took each request alone and cost 4 KiB reads at QD32 up to 45% more CPU per
// request (15.7 against 10.8 us, docs/benchmarks.md); a client at queue depth 1 is found after
// 16-64 us.
class SocketTransport final : public Transport {
 public:
  explicit SocketTransport(int fd, absl::Duration poll = absl::ZeroDuration())
      : fd_(fd), poll_(poll), least_(poll / 8), window_(poll) {}
  ssize_t Recv(void* buf, size_t n, RecvWait wait) override;
  bool Send(std::span<const iovec> pieces) override;
  std::optional<ssize_t> TryRecv(void* buf, size_t n) override;
  ssize_t TrySend(std::span<const std::byte> bytes) override;
  bool can_splice() const override { return true; }
  Spliced Splice(int pipe_fd, size_t n, bool wait) override;
  // How long the next wait for a request polls.
  absl::Duration poll_window() const { return window_; }
  // Whether the next wait for a request polls (false while it sleeps for a streaming client).
  bool polls_next() const { return sleeps_ahead_ == 0 && window_ > absl::ZeroDuration(); }

 private:
  // Polls until the window ends: the receive's result, or nullopt when nothing came.
  std::optional<ssize_t> PollFor(void* buf, size_t n);
  // Adjusts the window after a receive slept for `slept`.
  void Adapt(absl::Duration slept);

  static constexpr int kStreamingSleeps = 8;

  const int fd_;
  const absl::Duration poll_;
  // An eighth of poll_: the least open window, and a poll that succeeds sooner found a
  // streaming client.
  const absl::Duration least_;
  absl::Duration window_;
  int sleeps_ahead_ = 0;  // Waits that sleep at once, for a streaming client.
};

// Replies of pipelined requests, gathered so that a burst goes out in one send: small pieces
// are copied into a buffer, which is sent when full, with a large payload, or on Flush (before
// the session waits for input).
class BatchedWriter {
 public:
  explicit BatchedWriter(Transport* transport) : transport_(transport), buffer_(kBufferBytes) {}
  void set_transport(Transport* transport) { transport_ = transport; }
  bool Send(std::span<const iovec> pieces);
  bool Flush();
  // Sends what the connection takes of the gathered replies without blocking; the rest waits
  // for the next Flush. False when the connection failed.
  bool FlushWithoutWaiting();
  // Bytes that can still be gathered before a Send would have to send (and might block).
  size_t room() const { return buffer_.size() - used_; }

 private:
  static constexpr size_t kBufferBytes = 256 * 1024;
  Transport* transport_;
  std::vector<std::byte> buffer_;
  size_t used_ = 0;
};

// A pipe that holds a write's payload on its way from the socket to a file (splice(2)): the
// socket's pages move into it, and from it the kernel copies them into the file, once, where a
// buffer would take two copies (docs/architecture.md). Both ends are non-blocking.
class PayloadPipe {
 public:
  // A pipe of `capacity` bytes, or null when the system refuses one that large
  // (/proc/sys/fs/pipe-max-size).
  static std::unique_ptr<PayloadPipe> Create(size_t capacity);
  ~PayloadPipe();
  PayloadPipe(const PayloadPipe&) = delete;
  PayloadPipe& operator=(const PayloadPipe&) = delete;

  int read_fd() const { return read_fd_; }
  int write_fd() const { return write_fd_; }
  // The most bytes it holds (it may hold fewer: the kernel counts a pipe's room in pieces of
  // at most a page, and a socket may hand it smaller ones).
  size_t capacity() const { return capacity_; }
  // Reads what the pipe holds into `out`: the count read, or -1 on error.
  ssize_t ReadOut(std::span<std::byte> out);
  // Empties the pipe. False on error.
  bool Discard();

 private:
  PayloadPipe(int read_fd, int write_fd, size_t capacity)
      : read_fd_(read_fd), write_fd_(write_fd), capacity_(capacity) {}
  const int read_fd_;
  const int write_fd_;
  const size_t capacity_;
};

// What a BufferedReader does when it needs more of the client's bytes.
enum class BeforeRecv {
  kBlock,        // Receive, waiting as long as the client takes.
  kTakeArrived,  // Take what has arrived without waiting; when nothing has, ask again.
  kFail,         // Fail the read.
};

// Full-length reads over a Transport, through a buffer. `before_recv` runs before each receive
// (the session answers its requests there) and chooses how it waits; `nothing_arrived` is true
// when it runs again because a kTakeArrived receive found nothing.
class BufferedReader {
 public:
  using BeforeRecvFn = std::function<BeforeRecv(bool nothing_arrived)>;
  explicit BufferedReader(Transport* transport, BeforeRecvFn before_recv = nullptr)
      : transport_(transport), before_recv_(std::move(before_recv)), buffer_(kBufferBytes) {}
  void set_transport(Transport* transport) { transport_ = transport; }
  // Reads exactly `n` bytes; false at the end of the stream or on error. `wait` applies when
  // the buffer is refilled; a large payload read straight into `out` always sleeps.
  bool Read(void* out, size_t n, RecvWait wait = RecvWait::kSleep);
  bool Discard(size_t n);
  // Moves exactly `n` bytes of the stream into `pipe` (empty): those buffered are copied in,
  // the rest spliced from the connection (Transport::Splice), waiting as a large payload's
  // Read does. kPipeFull: the pipe took only part of them, `moved` bytes, which are the
  // stream's next bytes (read them out, then Read the rest). REQUIRES: the transport can
  // splice.
  enum class SpliceOutcome { kMoved, kPipeFull, kFailed };
  SpliceOutcome SpliceTo(PayloadPipe& pipe, size_t n, size_t& moved);
  // Bytes received but not yet consumed.
  size_t buffered() const { return end_ - begin_; }

 private:
  ssize_t Recv(void* buf, size_t n, RecvWait wait);

  static constexpr size_t kBufferBytes = 256 * 1024;
  Transport* transport_;
  BeforeRecvFn before_recv_;
  std::vector<std::byte> buffer_;
  size_t begin_ = 0;
  size_t end_ = 0;
  // The last read was a payload large enough to go straight to its destination. A client
  // writing large blocks sends the next one right behind its header, so the next refill asks
  // only for the bytes wanted (the header): filling the buffer would take up to kBufferBytes
  // of that payload in, to be copied out again.
  bool after_large_payload_ = false;
};

}  // namespace strata::nbd
