#include "transfer_listener.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "util/log.h"

namespace strata::tools {

absl::Status TransferListener::Start() {
  const size_t colon = address_.rfind(':');
  uint32_t port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(address_.substr(colon + 1), &port) ||
      port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("--transfer-listen takes HOST:PORT, not ", address_));
  }
  std::string host = address_.substr(0, colon);
  if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string port_text = absl::StrCat(port);
  if (::getaddrinfo(host.c_str(), port_text.c_str(), &hints, &found) != 0 || found == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("cannot resolve ", address_));
  }
  listen_fd_ = ::socket(found->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int one = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  const bool bound = listen_fd_ >= 0 &&
                     ::bind(listen_fd_, found->ai_addr, found->ai_addrlen) == 0 &&
                     ::listen(listen_fd_, 64) == 0;
  ::freeaddrinfo(found);
  if (!bound) {
    return absl::UnavailableError(
        absl::StrCat("transfer listener on ", address_, ": ", std::strerror(errno)));
  }
  sockaddr_storage addr{};
  socklen_t len = sizeof(addr);
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  char text[INET6_ADDRSTRLEN] = {};
  uint16_t bound_port = 0;
  if (addr.ss_family == AF_INET6) {
    const auto* a6 = reinterpret_cast<const sockaddr_in6*>(&addr);
    ::inet_ntop(AF_INET6, &a6->sin6_addr, text, sizeof(text));
    bound_port = ntohs(a6->sin6_port);
    bound_ = absl::StrCat("[", text, "]:", bound_port);
  } else {
    const auto* a4 = reinterpret_cast<const sockaddr_in*>(&addr);
    ::inet_ntop(AF_INET, &a4->sin_addr, text, sizeof(text));
    bound_port = ntohs(a4->sin_port);
    bound_ = absl::StrCat(text, ":", bound_port);
  }
  acceptor_ = std::thread([this] { AcceptLoop(); });
  return absl::OkStatus();
}

void TransferListener::AcceptLoop() {
  for (;;) {
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      return;  // The listener was shut down.
    }
    absl::MutexLock lock(&mu_);
    for (std::thread& t : finished_) t.join();
    finished_.clear();
    if (stopping_ || connections_.size() >= kMaxConnections) {
      ::close(fd);
      continue;
    }
    connections_[fd] = std::thread([this, fd] {
      store_.ServeTransfer(fd);  // Closes fd.
      absl::MutexLock done(&mu_);
      auto it = connections_.find(fd);
      if (it != connections_.end()) {
        finished_.push_back(std::move(it->second));
        connections_.erase(it);
      }
    });
  }
}

void TransferListener::Stop() {
  if (listen_fd_ < 0) return;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    for (auto& [fd, thread] : connections_) ::shutdown(fd, SHUT_RDWR);
  }
  ::shutdown(listen_fd_, SHUT_RDWR);
  if (acceptor_.joinable()) acceptor_.join();
  ::close(listen_fd_);
  listen_fd_ = -1;
  for (;;) {
    std::vector<std::thread> threads;
    {
      absl::MutexLock lock(&mu_);
      for (auto& [fd, thread] : connections_) ::shutdown(fd, SHUT_RDWR);
      threads.swap(finished_);
      if (threads.empty() && connections_.empty()) break;
    }
    for (std::thread& t : threads) t.join();
    if (threads.empty()) ::usleep(10'000);
  }
}

}  // namespace strata::tools
