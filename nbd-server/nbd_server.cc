#include "nbd_server.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "session.h"
#include "transport.h"

namespace strata::nbd {
namespace {

// Whether the peer of `fd` is the operator: on a unix socket, running as this process's user or
// as root (who can read the store's files anyway).
bool IsOperatorPeer(int fd) {
  sockaddr_storage local{};
  socklen_t local_length = sizeof(local);
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &local_length) != 0 ||
      local.ss_family != AF_UNIX) {
    return false;
  }
  ucred peer{};
  socklen_t peer_length = sizeof(peer);
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &peer_length) != 0) return false;
  return peer.uid == 0 || peer.uid == ::geteuid();
}

}  // namespace

NbdServer::NbdServer(ExportCatalog& exports, NbdServerOptions options)
    : exports_(exports), options_(std::move(options)) {}

NbdServer::~NbdServer() { Stop(); }

absl::Status NbdServer::Start() {
  if (options_.tls_mode != TlsMode::kOff) {
    absl::StatusOr<std::unique_ptr<TlsContext>> tls = TlsContext::Create(options_.tls);
    if (!tls.ok()) return tls.status();
    tls_ = std::move(*tls);
  }
  for (const std::string& address : options_.listen) {
    auto listener = std::make_unique<Listener>();
    int fd = -1;
    if (address.starts_with("unix:")) {
      const std::string path = address.substr(5);
      sockaddr_un addr{};
      if (path.size() >= sizeof(addr.sun_path))
        return absl::InvalidArgumentError("unix socket path too long");
      addr.sun_family = AF_UNIX;
      std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
      ::unlink(path.c_str());
      fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
          ::listen(fd, 64) != 0) {
        const int saved = errno;
        if (fd >= 0) ::close(fd);
        return absl::UnavailableError(
            absl::StrCat("cannot listen on ", address, ": ", std::strerror(saved)));
      }
      listener->address = address;
    } else {
      const size_t colon = address.rfind(':');
      uint32_t port = 0;
      if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port) ||
          port > 65535) {
        return absl::InvalidArgumentError(
            absl::StrCat("NBD address \"", address, "\" is not HOST:PORT or unix:PATH"));
      }
      std::string host = address.substr(0, colon);
      if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
      addrinfo hints{};
      hints.ai_family = AF_UNSPEC;
      hints.ai_socktype = SOCK_STREAM;
      hints.ai_flags = AI_PASSIVE | AI_NUMERICHOST;
      addrinfo* res = nullptr;
      if (::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res) != 0) {
        return absl::InvalidArgumentError(absl::StrCat("bad NBD address ", address));
      }
      fd = ::socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
      int one = 1;
      ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
      const bool ok = ::bind(fd, res->ai_addr, res->ai_addrlen) == 0 && ::listen(fd, 64) == 0;
      ::freeaddrinfo(res);
      if (!ok) {
        const int saved = errno;
        ::close(fd);
        return absl::UnavailableError(
            absl::StrCat("cannot listen on ", address, ": ", std::strerror(saved)));
      }
      sockaddr_storage bound{};
      socklen_t len = sizeof(bound);
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len);
      const uint16_t actual =
          ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                            : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
      listener->address = absl::StrCat(address.substr(0, colon), ":", actual);
    }
    listener->fd = fd;
    Listener* raw = listener.get();
    listeners_.push_back(std::move(listener));
    raw->thread = std::thread([this, raw] { AcceptLoop(*raw); });
  }
  return absl::OkStatus();
}

std::vector<std::string> NbdServer::addresses() const {
  std::vector<std::string> out;
  for (const auto& l : listeners_) out.push_back(l->address);
  return out;
}

void NbdServer::Stop() {
  if (stopping_.exchange(true)) return;
  for (auto& l : listeners_) ::shutdown(l->fd, SHUT_RDWR);
  for (auto& l : listeners_) {
    if (l->thread.joinable()) l->thread.join();
    ::close(l->fd);
    if (l->address.starts_with("unix:")) ::unlink(l->address.substr(5).c_str());
  }
  connections_.StopAll();
}

void NbdServer::AcceptLoop(Listener& listener) {
  while (!stopping_.load()) {
    const int fd = ::accept4(listener.fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      return;
    }
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (!connections_.Start(fd, options_.max_connections, [this](int c) { Serve(c); })) ::close(fd);
  }
}

void NbdServer::Serve(int fd) {
  SocketTransport transport(fd, options_.poll);
  Session(exports_, fd, &transport,
          {.tls = tls_.get(),
           .tls_mode = options_.tls_mode,
           .auth = options_.auth,
           .operator_peer = options_.auth == NbdAuth::kAccount && IsOperatorPeer(fd),
           .handshake_timeout = options_.handshake_timeout})
      .Run();
}

}  // namespace strata::nbd
