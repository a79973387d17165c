#include "transport.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <optional>

namespace strata::nbd {

std::optional<ssize_t> SocketTransport::TryRecv(void* buf, size_t n) {
  const ssize_t got = ::recv(fd_, buf, n, MSG_DONTWAIT);
  if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return std::nullopt;
  return got;
}

std::optional<ssize_t> SocketTransport::PollFor(void* buf, size_t n) {
  const auto begin = std::chrono::steady_clock::now();
  const auto end = begin + absl::ToChronoNanoseconds(window_);
  const auto streaming = begin + absl::ToChronoNanoseconds(least_);
  auto now = begin;  // The last clock read: the success below is judged by it.
  do {
    sched_yield();
    if (const std::optional<ssize_t> got = TryRecv(buf, n)) {
      if (now < streaming) sleeps_ahead_ = kStreamingSleeps;
      return got;
    }
    now = std::chrono::steady_clock::now();
  } while (now < end);
  return std::nullopt;
}

void SocketTransport::Adapt(absl::Duration slept) {
  if (slept > poll_) {
    window_ = window_ / 2 < least_ ? absl::ZeroDuration() : window_ / 2;
  } else {
    window_ = window_ == absl::ZeroDuration() ? least_ : std::min(window_ * 2, poll_);
  }
}

ssize_t SocketTransport::Recv(void* buf, size_t n, RecvWait wait) {
  const bool adaptive = wait == RecvWait::kPollFirst && poll_ > absl::ZeroDuration();
  if (adaptive) {
    // What is already there costs no clock reads, and leaves the window as it is.
    if (const std::optional<ssize_t> got = TryRecv(buf, n)) return *got;
    if (sleeps_ahead_ > 0) {
      --sleeps_ahead_;
    } else if (window_ > absl::ZeroDuration()) {
      if (const std::optional<ssize_t> polled = PollFor(buf, n)) return *polled;
    }
  }
  const auto asleep =
      adaptive ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point();
  for (;;) {
    const ssize_t got = ::recv(fd_, buf, n, 0);
    if (got < 0 && errno == EINTR) continue;
    if (adaptive && got > 0) {
      Adapt(absl::FromChrono(std::chrono::steady_clock::now() - asleep));
    }
    return got;
  }
}

Spliced SocketTransport::Splice(int pipe_fd, size_t n, bool wait) {
  pollfd socket_ready = {.fd = fd_, .events = POLLIN, .revents = 0};
  // A TCP socket's splice sleeps until bytes arrive, whatever its flags say: without waiting,
  // ask first.
  if (!wait && ::poll(&socket_ready, 1, 0) <= 0) return {Spliced::kNothingArrived};
  for (int full_tries = 0;;) {
    const ssize_t got =
        ::splice(fd_, nullptr, pipe_fd, nullptr, n, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (got > 0) return {Spliced::kMoved, static_cast<size_t>(got)};
    if (got == 0) return {Spliced::kEnd};
    if (errno == EINTR) continue;
    if (errno != EAGAIN) return {Spliced::kFailed};
    // Nothing has arrived (a unix socket does not sleep), or the pipe has no room.
    pollfd both[2] = {socket_ready, {.fd = pipe_fd, .events = POLLOUT, .revents = 0}};
    if (::poll(both, 2, 0) < 0 && errno != EINTR) return {Spliced::kFailed};
    if (both[0].revents != 0) {
      // Bytes (or the end) are there: the pipe has no room, or had none a moment ago.
      if ((both[1].revents & POLLOUT) == 0 || ++full_tries > 1) return {Spliced::kPipeFull};
      continue;
    }
    if (!wait) return {Spliced::kNothingArrived};
    if (::poll(&socket_ready, 1, -1) < 0 && errno != EINTR) return {Spliced::kFailed};
  }
}

std::unique_ptr<PayloadPipe> PayloadPipe::Create(size_t capacity) {
  int fds[2];
  if (::pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) return nullptr;
  auto pipe = std::unique_ptr<PayloadPipe>(new PayloadPipe(fds[0], fds[1], capacity));
  const int granted = ::fcntl(fds[1], F_SETPIPE_SZ, static_cast<int>(capacity));
  if (granted < 0 || static_cast<size_t>(granted) < capacity) return nullptr;
  return pipe;
}

PayloadPipe::~PayloadPipe() {
  ::close(read_fd_);
  ::close(write_fd_);
}

ssize_t PayloadPipe::ReadOut(std::span<std::byte> out) {
  size_t done = 0;
  while (done < out.size()) {
    const ssize_t got = ::read(read_fd_, out.data() + done, out.size() - done);
    if (got > 0) {
      done += static_cast<size_t>(got);
    } else if (got < 0 && errno == EINTR) {
      continue;
    } else if (got < 0 && errno == EAGAIN) {
      break;  // Empty.
    } else {
      return -1;
    }
  }
  return static_cast<ssize_t>(done);
}

bool PayloadPipe::Discard() {
  char sink[16384];
  for (;;) {
    const ssize_t got = ::read(read_fd_, sink, sizeof(sink));
    if (got > 0) continue;
    if (got < 0 && errno == EINTR) continue;
    return got < 0 && errno == EAGAIN;
  }
}

ssize_t SocketTransport::TrySend(std::span<const std::byte> bytes) {
  for (;;) {
    const ssize_t put = ::send(fd_, bytes.data(), bytes.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (put >= 0) return put;
    if (errno == EINTR) continue;
    return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
  }
}

bool SocketTransport::Send(std::span<const iovec> pieces) {
  constexpr size_t kMaxPieces = 8;
  iovec iov[kMaxPieces];
  size_t count = 0;
  for (const iovec& p : pieces) {
    if (p.iov_len == 0) continue;
    if (count == kMaxPieces) return false;
    iov[count++] = p;
  }
  size_t first = 0;
  while (first < count) {
    msghdr msg{};
    msg.msg_iov = iov + first;
    msg.msg_iovlen = count - first;
    ssize_t put = ::sendmsg(fd_, &msg, MSG_NOSIGNAL);
    if (put < 0 && errno == EINTR) continue;
    if (put <= 0) return false;
    while (first < count && static_cast<size_t>(put) >= iov[first].iov_len) {
      put -= static_cast<ssize_t>(iov[first].iov_len);
      ++first;
    }
    if (first < count) {
      iov[first].iov_base = static_cast<char*>(iov[first].iov_base) + put;
      iov[first].iov_len -= static_cast<size_t>(put);
    }
  }
  return true;
}

bool BatchedWriter::Send(std::span<const iovec> pieces) {
  size_t total = 0;
  for (const iovec& p : pieces) total += p.iov_len;
  if (used_ + total <= buffer_.size()) {
    for (const iovec& p : pieces) {
      if (p.iov_len == 0) continue;  // An empty piece may have no base at all.
      std::memcpy(buffer_.data() + used_, p.iov_base, p.iov_len);
      used_ += p.iov_len;
    }
    return true;
  }
  // Too big to gather: what is queued and the new pieces go out in one send.
  iovec all[8];
  size_t count = 0;
  if (used_ > 0) all[count++] = {buffer_.data(), used_};
  for (const iovec& p : pieces) {
    if (count == std::size(all)) return false;
    all[count++] = p;
  }
  used_ = 0;
  return transport_->Send(std::span(all, count));
}

bool BatchedWriter::FlushWithoutWaiting() {
  if (used_ == 0) return true;
  const ssize_t sent = transport_->TrySend(std::span(buffer_.data(), used_));
  if (sent < 0) return false;
  std::memmove(buffer_.data(), buffer_.data() + sent, used_ - static_cast<size_t>(sent));
  used_ -= static_cast<size_t>(sent);
  return true;
}

bool BatchedWriter::Flush() {
  if (used_ == 0) return true;
  const iovec piece = {buffer_.data(), used_};
  used_ = 0;
  return transport_->Send(std::span(&piece, 1));
}

ssize_t BufferedReader::Recv(void* buf, size_t n, RecvWait wait) {
  bool nothing_arrived = false;
  while (before_recv_ != nullptr) {
    const BeforeRecv step = before_recv_(nothing_arrived);
    if (step == BeforeRecv::kFail) return -1;
    if (step == BeforeRecv::kBlock) break;
    if (const std::optional<ssize_t> got = transport_->TryRecv(buf, n)) return *got;
    nothing_arrived = true;
  }
  return transport_->Recv(buf, n, wait);
}

bool BufferedReader::Read(void* out, size_t n, RecvWait wait) {
  auto* dst = static_cast<std::byte*>(out);
  const size_t from_buffer = std::min(n, buffered());
  if (from_buffer > 0) std::memcpy(dst, buffer_.data() + begin_, from_buffer);
  begin_ += from_buffer;
  dst += from_buffer;
  n -= from_buffer;
  if (begin_ == end_) begin_ = end_ = 0;
  while (n > 0) {
    if (n >= buffer_.size() / 2) {  // A large payload goes straight to its destination.
      const ssize_t got = Recv(dst, n, RecvWait::kSleep);
      if (got <= 0) return false;
      dst += got;
      n -= static_cast<size_t>(got);
      after_large_payload_ = true;
      continue;
    }
    const size_t want = after_large_payload_ ? n : buffer_.size();
    after_large_payload_ = false;
    const ssize_t got = Recv(buffer_.data(), want, wait);
    if (got <= 0) return false;
    end_ = static_cast<size_t>(got);
    const size_t take = std::min(n, end_);
    std::memcpy(dst, buffer_.data(), take);
    begin_ = take;
    dst += take;
    n -= take;
    if (begin_ == end_) begin_ = end_ = 0;
  }
  return true;
}

BufferedReader::SpliceOutcome BufferedReader::SpliceTo(PayloadPipe& pipe, size_t n, size_t& moved) {
  moved = 0;
  if (n > pipe.capacity()) return SpliceOutcome::kPipeFull;
  // What was received with the header goes in first (a copy, at most the buffer's size).
  const size_t from_buffer = std::min(n, buffered());
  while (moved < from_buffer) {
    const ssize_t put = ::write(pipe.write_fd(), buffer_.data() + begin_, from_buffer - moved);
    if (put < 0 && errno == EINTR) continue;
    if (put <= 0)
      return put < 0 && errno == EAGAIN ? SpliceOutcome::kPipeFull : SpliceOutcome::kFailed;
    begin_ += static_cast<size_t>(put);
    moved += static_cast<size_t>(put);
  }
  if (begin_ == end_) begin_ = end_ = 0;
  while (moved < n) {
    // As Recv: the session answers its requests before each wait, and may ask for what has
    // arrived only.
    bool nothing_arrived = false;
    bool wait = true;
    Spliced got{Spliced::kNothingArrived};
    while (before_recv_ != nullptr) {
      const BeforeRecv step = before_recv_(nothing_arrived);
      if (step == BeforeRecv::kFail) return SpliceOutcome::kFailed;
      if (step == BeforeRecv::kBlock) break;
      got = transport_->Splice(pipe.write_fd(), n - moved, /*wait=*/false);
      if (got.outcome != Spliced::kNothingArrived) {
        wait = false;
        break;
      }
      nothing_arrived = true;
    }
    if (wait) got = transport_->Splice(pipe.write_fd(), n - moved, /*wait=*/true);
    switch (got.outcome) {
      case Spliced::kMoved:
        moved += got.bytes;
        break;
      case Spliced::kPipeFull:
        return SpliceOutcome::kPipeFull;
      default:
        return SpliceOutcome::kFailed;
    }
  }
  after_large_payload_ = true;
  return SpliceOutcome::kMoved;
}

bool BufferedReader::Discard(size_t n) {
  char sink[16384];
  while (n > 0) {
    const size_t step = std::min(n, sizeof(sink));
    if (!Read(sink, step)) return false;
    n -= step;
  }
  return true;
}

}  // namespace strata::nbd
