#pragma once
// The transfer protocol's framing (docs/formats/transfer.md): every message is a frame
//   magic(4) type(1) length(4) payload(length)
// in little-endian fixed-width fields, payloads built with util/coding.h. A frame that does not
// parse ends the connection; the destination reconnects and resumes.

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "copy/token_bucket.h"

typedef struct ssl_st SSL;

namespace strata::copy {

inline constexpr uint32_t kFrameMagic = 0x46585453;  // "STXF" on the wire.
inline constexpr uint32_t kFrameHeaderBytes = 9;
inline constexpr uint32_t kMaxFrameBytes = 16u << 20;
inline constexpr uint16_t kProtocolVersion = 1;

enum class FrameType : uint8_t {
  kHello = 1,          // Destination -> source: version, region, account, link model.
  kOpen = 2,           // Destination -> source: snapshot, base candidates.
  kManifest = 3,       // Source -> destination: the chunks to send, with a SHA-256 digest.
  kGet = 4,            // Destination -> source: chunk indexes.
  kChunk = 5,          // Source -> destination: one chunk, compressed, with its XXH3-128 digest.
  kBatchEnd = 6,       // Source -> destination: every chunk of a kGet was sent.
  kError = 7,          // Either way: status code and message; the connection then closes.
  kDescribeImage = 8,  // Destination -> source: an image id.
  kImage = 9,          // Source -> destination: the image's record (JSON), if it may launch it.
};
inline constexpr uint8_t kLastFrameType = 9;

struct Frame {
  FrameType type = FrameType::kError;
  std::string payload;
};

// One end of a transfer connection over a stream socket, in TLS when `ssl` is given (between
// processes, copy/transfer_tls.h). Owns the fd and the SSL. Not thread-safe, but Shutdown may be
// called from another thread.
class Connection {
 public:
  explicit Connection(int fd, SSL* ssl = nullptr) : fd_(fd), ssl_(ssl) {}
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Ends waits for the bucket early once `stop` is set (the store is stopping).
  void set_stop(const std::atomic<bool>* stop) { stop_ = stop; }
  // Sends a frame whole. With a bucket, waits for its tokens first (the link's bandwidth).
  absl::Status Send(FrameType type, absl::string_view payload, TokenBucket* bucket = nullptr);
  // Receives the next frame; kUnavailable when the peer closed or the bytes are not a frame.
  absl::StatusOr<Frame> Receive();
  // Unblocks a Receive in another thread and makes later calls fail.
  void Shutdown();
  // Closes the socket at once (a dropped link).
  void Cut();

  uint64_t bytes_sent() const { return bytes_sent_; }
  uint64_t bytes_received() const { return bytes_received_; }

 private:
  bool WriteAll(const char* data, size_t n);
  bool ReadAll(char* data, size_t n);

  int fd_;
  SSL* ssl_;
  const std::atomic<bool>* stop_ = nullptr;
  uint64_t bytes_sent_ = 0;
  uint64_t bytes_received_ = 0;
};

// An error frame's payload, and back.
std::string EncodeError(const absl::Status& status);
absl::Status DecodeError(absl::string_view payload);

}  // namespace strata::copy
