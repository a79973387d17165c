#pragma once
// A connection's byte stream: a plain socket, or TLS over one once the client asked for
// STARTTLS. The session reads through a buffer so that pipelined requests cost one recv.

#include <sys/types.h>
#include <sys/uio.h>

#include <cstddef>
#include <memory>
#include <span>
#include <vector>

namespace strata::nbd {

class Transport {
 public:
  virtual ~Transport() = default;
  // Reads at most `n` bytes: the count read, 0 at the end of the stream, negative on error.
  virtual ssize_t Recv(void* buf, size_t n) = 0;
  // Sends every piece in order. False when the connection failed.
  virtual bool Send(std::span<const iovec> pieces) = 0;
};

// A connected socket; does not own the descriptor.
class SocketTransport final : public Transport {
 public:
  explicit SocketTransport(int fd) : fd_(fd) {}
  ssize_t Recv(void* buf, size_t n) override;
  bool Send(std::span<const iovec> pieces) override;

 private:
  const int fd_;
};

// Full-length reads over a Transport, through a buffer.
class BufferedReader {
 public:
  explicit BufferedReader(Transport* transport) : transport_(transport), buffer_(kBufferBytes) {}
  void set_transport(Transport* transport) { transport_ = transport; }
  // Reads exactly `n` bytes; false at the end of the stream or on error.
  bool Read(void* out, size_t n);
  bool Discard(size_t n);
  // Bytes received but not yet consumed.
  size_t buffered() const { return end_ - begin_; }

 private:
  static constexpr size_t kBufferBytes = 256 * 1024;
  Transport* transport_;
  std::vector<std::byte> buffer_;
  size_t begin_ = 0;
  size_t end_ = 0;
};

}  // namespace strata::nbd
