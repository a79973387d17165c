#include "nbd_client.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "protocol.h"

namespace strata::tools {
namespace {

void Put16(std::string& out, uint16_t v) {
  out.push_back(static_cast<char>(v >> 8));
  out.push_back(static_cast<char>(v));
}
void Put32(std::string& out, uint32_t v) {
  for (int i = 3; i >= 0; --i) out.push_back(static_cast<char>(v >> (8 * i)));
}
void Put64(std::string& out, uint64_t v) {
  for (int i = 7; i >= 0; --i) out.push_back(static_cast<char>(v >> (8 * i)));
}
uint64_t Get(const char* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

absl::Status SendAll(int fd, const char* data, size_t n) {
  while (n > 0) {
    const ssize_t w = send(fd, data, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return absl::UnavailableError(absl::StrCat("NBD send: ", strerror(errno)));
    data += w;
    n -= static_cast<size_t>(w);
  }
  return absl::OkStatus();
}

absl::Status RecvAll(int fd, char* data, size_t n) {
  while (n > 0) {
    const ssize_t r = recv(fd, data, n, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return absl::UnavailableError("NBD server closed the connection");
    data += r;
    n -= static_cast<size_t>(r);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<NbdClient>> NbdClient::Connect(const std::string& socket_path,
                                                              const std::string& export_name) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat("socket path too long: ", socket_path));
  }
  std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size());
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("socket: ", strerror(errno)));
  auto fail = [fd](absl::Status s) {
    close(fd);
    return s;
  };
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return fail(absl::UnavailableError(
        absl::StrCat("cannot reach stratad's NBD socket ", socket_path, ": ", strerror(errno))));
  }
  char hello[18];
  if (absl::Status s = RecvAll(fd, hello, sizeof(hello)); !s.ok()) return fail(s);
  if (Get(hello, 8) != nbd::kNbdMagic || Get(hello + 8, 8) != nbd::kOptionMagic) {
    return fail(absl::DataLossError("not an NBD server"));
  }
  std::string out;
  Put32(out, nbd::kFlagFixedNewstyle);
  std::string go;
  Put32(go, static_cast<uint32_t>(export_name.size()));
  go += export_name;
  Put16(go, 0);  // No information requests.
  Put64(out, nbd::kOptionMagic);
  Put32(out, nbd::kOptGo);
  Put32(out, static_cast<uint32_t>(go.size()));
  out += go;
  if (absl::Status s = SendAll(fd, out.data(), out.size()); !s.ok()) return fail(s);
  uint64_t size = 0;
  for (;;) {
    char header[20];
    if (absl::Status s = RecvAll(fd, header, sizeof(header)); !s.ok()) return fail(s);
    const uint32_t type = static_cast<uint32_t>(Get(header + 12, 4));
    const uint32_t length = static_cast<uint32_t>(Get(header + 16, 4));
    if (length > (1 << 20)) return fail(absl::DataLossError("oversized NBD option reply"));
    std::string data(length, '\0');
    if (absl::Status s = RecvAll(fd, data.data(), length); !s.ok()) return fail(s);
    if (type == nbd::kRepAck) break;
    if (type == nbd::kRepInfo && length >= 12 && Get(data.data(), 2) == nbd::kInfoExport) {
      size = Get(data.data() + 2, 8);
    } else if (type & (1u << 31)) {
      return fail(absl::NotFoundError(absl::StrCat(
          "NBD export ", export_name, " refused: ", data.size() > 0 ? data : "error")));
    }
  }
  return std::unique_ptr<NbdClient>(new NbdClient(fd, size));
}

NbdClient::~NbdClient() {
  std::string request;
  Put32(request, nbd::kRequestMagic);
  Put16(request, 0);
  Put16(request, nbd::kCmdDisc);
  Put64(request, next_cookie_);
  Put64(request, 0);
  Put32(request, 0);
  (void)SendAll(fd_, request.data(), request.size());
  close(fd_);
}

absl::Status NbdClient::Command(uint16_t type, uint64_t offset, std::span<const char> payload,
                                uint32_t length) {
  std::string request;
  Put32(request, nbd::kRequestMagic);
  Put16(request, 0);
  Put16(request, type);
  const uint64_t cookie = next_cookie_++;
  Put64(request, cookie);
  Put64(request, offset);
  Put32(request, length);
  request.append(payload.data(), payload.size());
  if (absl::Status s = SendAll(fd_, request.data(), request.size()); !s.ok()) return s;
  char reply[16];
  if (absl::Status s = RecvAll(fd_, reply, sizeof(reply)); !s.ok()) return s;
  if (Get(reply, 4) != nbd::kSimpleReplyMagic || Get(reply + 8, 8) != cookie) {
    return absl::DataLossError("unexpected NBD reply");
  }
  if (const uint32_t error = static_cast<uint32_t>(Get(reply + 4, 4)); error != 0) {
    return absl::InternalError(absl::StrCat(
        "NBD error ", error, " (", strerror(static_cast<int>(error)), ") at offset ", offset));
  }
  return absl::OkStatus();
}

absl::Status NbdClient::Write(uint64_t offset, std::span<const char> data) {
  return Command(nbd::kCmdWrite, offset, data, static_cast<uint32_t>(data.size()));
}

absl::Status NbdClient::Flush() { return Command(nbd::kCmdFlush, 0, {}, 0); }

}  // namespace strata::tools
