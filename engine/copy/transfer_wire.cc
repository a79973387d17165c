#include "copy/transfer_wire.h"

#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "strata/aws_error.h"
#include "util/coding.h"

namespace strata::copy {

bool Connection::WriteAll(const char* data, size_t n) {
  while (n > 0) {
    ssize_t w = 0;
    if (ssl_ != nullptr) {
      // SSL_write cannot pass MSG_NOSIGNAL: stratad ignores SIGPIPE.
      w = SSL_write(ssl_, data, static_cast<int>(std::min<size_t>(n, 1 << 30)));
    } else {
      w = ::send(fd_, data, n, MSG_NOSIGNAL);
      if (w < 0 && errno == EINTR) continue;
    }
    if (w <= 0) return false;
    data += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

bool Connection::ReadAll(char* data, size_t n) {
  while (n > 0) {
    ssize_t r = 0;
    if (ssl_ != nullptr) {
      r = SSL_read(ssl_, data, static_cast<int>(std::min<size_t>(n, 1 << 30)));
    } else {
      r = ::recv(fd_, data, n, 0);
      if (r < 0 && errno == EINTR) continue;
    }
    if (r <= 0) return false;
    data += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

Connection::~Connection() {
  SSL_free(ssl_);
  if (fd_ >= 0) ::close(fd_);
}

absl::Status Connection::Send(FrameType type, absl::string_view payload, TokenBucket* bucket) {
  if (payload.size() > kMaxFrameBytes) {
    return absl::InvalidArgumentError(absl::StrCat("a frame of ", payload.size(), " bytes"));
  }
  std::string header;
  util::PutFixed32(header, kFrameMagic);
  header.push_back(static_cast<char>(type));
  util::PutFixed32(header, static_cast<uint32_t>(payload.size()));
  if (bucket != nullptr) bucket->Acquire(header.size() + payload.size(), stop_);
  if (fd_ < 0 || !WriteAll(header.data(), header.size()) ||
      !WriteAll(payload.data(), payload.size())) {
    return absl::UnavailableError(absl::StrCat("transfer connection lost while sending: ",
                                               fd_ < 0 ? "closed" : std::strerror(errno)));
  }
  bytes_sent_ += header.size() + payload.size();
  return absl::OkStatus();
}

absl::StatusOr<Frame> Connection::Receive() {
  char header[kFrameHeaderBytes];
  if (fd_ < 0 || !ReadAll(header, sizeof(header))) {
    return absl::UnavailableError("transfer connection closed by the peer");
  }
  util::Decoder in(absl::string_view(header, sizeof(header)));
  uint32_t magic = 0;
  uint32_t length = 0;
  std::string type_byte;
  in.GetFixed32(magic);  // The header is whole: these cannot fail.
  in.GetBytes(1, type_byte);
  in.GetFixed32(length);
  const uint8_t type = static_cast<uint8_t>(type_byte[0]);
  if (magic != kFrameMagic || type < 1 || type > kLastFrameType || length > kMaxFrameBytes) {
    return absl::UnavailableError("transfer connection: not a frame (bad magic, type or length)");
  }
  Frame frame;
  frame.type = static_cast<FrameType>(type);
  frame.payload.resize(length);
  if (!ReadAll(frame.payload.data(), length)) {
    return absl::UnavailableError("transfer connection closed inside a frame");
  }
  bytes_received_ += sizeof(header) + length;
  return frame;
}

void Connection::Shutdown() {
  if (fd_ >= 0) ::shutdown(fd_, SHUT_RDWR);
}

void Connection::Cut() {
  if (fd_ >= 0) {
    ::shutdown(fd_, SHUT_RDWR);
    SSL_free(ssl_);
    ssl_ = nullptr;
    ::close(fd_);
    fd_ = -1;
  }
}

std::string EncodeError(const absl::Status& status) {
  std::string out;
  util::PutFixed32(out, static_cast<uint32_t>(status.code()));
  util::PutLengthPrefixed(out, status.message());
  util::PutLengthPrefixed(out, AwsErrorCode(status));  // Empty when it carries none.
  return out;
}

absl::Status DecodeError(absl::string_view payload) {
  util::Decoder in(payload);
  uint32_t code = 0;
  std::string message;
  std::string aws_code;
  if (!in.GetFixed32(code) || !in.GetLengthPrefixed(message) || !in.GetLengthPrefixed(aws_code) ||
      !in.done() || code == 0 || code > 16) {
    return absl::DataLossError("transfer: a malformed error frame");
  }
  absl::Status status(static_cast<absl::StatusCode>(code), message);
  return aws_code.empty() ? status : WithAwsErrorCode(status, aws_code);
}

}  // namespace strata::copy
