#pragma once
// A connection's byte stream: a plain socket, or TLS over one once the client asked for
// STARTTLS. The session reads through a buffer so that pipelined requests cost one recv.

#include <sys/types.h>
#include <sys/uio.h>

#include <cstddef>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "absl/time/time.h"

namespace strata::nbd {

class Transport {
 public:
  virtual ~Transport() = default;
  // Reads at most `n` bytes: the count read, 0 at the end of the stream, negative on error.
  virtual ssize_t Recv(void* buf, size_t n) = 0;
  // Sends every piece in order. False when the connection failed.
  virtual bool Send(std::span<const iovec> pieces) = 0;
};

// A connected socket; does not own the descriptor. With a `poll` time, a receive that would
// block first tries again without blocking for up to that long, yielding the processor between
// tries: a client that sends its next request within it (a VM at queue depth 1) is read without
// the sleep and the wake-up, which cost more than the polling on virtual machines
// (docs/benchmarks.md). An idle connection pays the poll's CPU once per wait.
class SocketTransport final : public Transport {
 public:
  explicit SocketTransport(int fd, absl::Duration poll = absl::ZeroDuration())
      : fd_(fd), poll_(poll) {}
  ssize_t Recv(void* buf, size_t n) override;
  bool Send(std::span<const iovec> pieces) override;

 private:
  const int fd_;
  const absl::Duration poll_;
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

 private:
  static constexpr size_t kBufferBytes = 256 * 1024;
  Transport* transport_;
  std::vector<std::byte> buffer_;
  size_t used_ = 0;
};

// Full-length reads over a Transport, through a buffer. `before_wait` runs before each read
// that may block (the session flushes its replies there); returning false fails the read.
class BufferedReader {
 public:
  explicit BufferedReader(Transport* transport, std::function<bool()> before_wait = nullptr)
      : transport_(transport), before_wait_(std::move(before_wait)), buffer_(kBufferBytes) {}
  void set_transport(Transport* transport) { transport_ = transport; }
  // Reads exactly `n` bytes; false at the end of the stream or on error.
  bool Read(void* out, size_t n);
  bool Discard(size_t n);
  // Bytes received but not yet consumed.
  size_t buffered() const { return end_ - begin_; }

 private:
  ssize_t Recv(void* buf, size_t n);

  static constexpr size_t kBufferBytes = 256 * 1024;
  Transport* transport_;
  std::function<bool()> before_wait_;
  std::vector<std::byte> buffer_;
  size_t begin_ = 0;
  size_t end_ = 0;
};

}  // namespace strata::nbd
