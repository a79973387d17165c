#include "http_server.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace strata::api {
namespace {

const char* Reason(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 204:
      return "No Content";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 409:
      return "Conflict";
    case 411:
      return "Length Required";
    case 413:
      return "Payload Too Large";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 503:
      return "Service Unavailable";
    default:
      return "Status";
  }
}

absl::Status BadRequest(int status, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(status, " ", why));
}

bool SendAll(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

HttpServer::HttpServer(HttpServerOptions options, HttpHandler handler)
    : options_(std::move(options)), handler_(std::move(handler)) {}

HttpServer::~HttpServer() { Stop(); }

absl::Status HttpServer::Start() {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICHOST;
  addrinfo* res = nullptr;
  const std::string port = std::to_string(options_.port);
  if (int rc = ::getaddrinfo(options_.host.c_str(), port.c_str(), &hints, &res); rc != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad listen address ", options_.host, ": ", gai_strerror(rc)));
  }
  const int fd = ::socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  const int bound = ::bind(fd, res->ai_addr, res->ai_addrlen);
  ::freeaddrinfo(res);
  if (bound != 0 || ::listen(fd, 128) != 0) {
    const int saved = errno;
    ::close(fd);
    return absl::UnavailableError(absl::StrCat("cannot listen on ", options_.host, ":",
                                               options_.port, ": ", std::strerror(saved)));
  }
  sockaddr_storage addr{};
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port
                                           : reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
  listen_fd_ = fd;
  accept_thread_ = std::thread([this] { AcceptLoop(); });
  return absl::OkStatus();
}

void HttpServer::Stop() {
  if (stopping_.exchange(true)) return;
  if (listen_fd_ >= 0) ::shutdown(listen_fd_, SHUT_RDWR);
  if (accept_thread_.joinable()) accept_thread_.join();
  if (listen_fd_ >= 0) ::close(listen_fd_);
  connections_.StopAll();
}

void HttpServer::AcceptLoop() {
  while (!stopping_.load()) {
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      return;  // Shut down.
    }
    timeval tv{options_.receive_timeout_ms / 1000, (options_.receive_timeout_ms % 1000) * 1000};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (!connections_.Start(fd, options_.max_connections, [this](int c) { Serve(c); })) {
      (void)SendAll(fd, SerializeResponse({503, {}, "too many connections\n"}, false));
      ::close(fd);
    }
  }
}

void HttpServer::Serve(int fd) {
  std::string buffer;
  char chunk[16384];
  bool open = true;
  while (open && !stopping_.load()) {
    absl::StatusOr<std::optional<HttpRequest>> parsed = ParseRequest(buffer, options_);
    if (!parsed.ok()) {
      int status = 400;
      (void)absl::SimpleAtoi(std::string(parsed.status().message()).substr(0, 3), &status);
      (void)SendAll(fd, SerializeResponse(
                            {status, {}, std::string(parsed.status().message()) + "\n"}, false));
      break;
    }
    if (!parsed->has_value()) {
      const ssize_t n = ::recv(fd, chunk, sizeof(chunk), 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;  // Closed, error, or the receive timeout.
      buffer.append(chunk, static_cast<size_t>(n));
      continue;
    }
    const HttpRequest& request = **parsed;
    const bool keep_alive = absl::AsciiStrToLower(request.Header("connection")) != "close";
    HttpResponse response = handler_(request);
    open = SendAll(fd, SerializeResponse(response, keep_alive)) && keep_alive;
  }
}

absl::StatusOr<std::optional<HttpRequest>> HttpServer::ParseRequest(
    std::string& buffer, const HttpServerOptions& options) {
  const size_t end = buffer.find("\r\n\r\n");
  if (end == std::string::npos) {
    if (buffer.size() > options.max_header_bytes) return BadRequest(431, "headers too large");
    return std::nullopt;
  }
  if (end > options.max_header_bytes) return BadRequest(431, "headers too large");
  HttpRequest request;
  const std::string head = buffer.substr(0, end);
  size_t line_end = head.find("\r\n");
  const std::string request_line = head.substr(0, line_end);
  const size_t sp1 = request_line.find(' ');
  const size_t sp2 = request_line.rfind(' ');
  if (sp1 == std::string::npos || sp2 == sp1 || request_line.substr(sp2 + 1, 7) != "HTTP/1.") {
    return BadRequest(400, "malformed request line");
  }
  request.method = request_line.substr(0, sp1);
  request.target = request_line.substr(sp1 + 1, sp2 - sp1 - 1);
  if (request.target.empty() || request.target[0] != '/')
    return BadRequest(400, "bad request target");
  const size_t q = request.target.find('?');
  request.path = request.target.substr(0, q);
  request.query = q == std::string::npos ? "" : request.target.substr(q + 1);
  size_t pos = line_end == std::string::npos ? head.size() : line_end + 2;
  while (pos < head.size()) {
    size_t next = head.find("\r\n", pos);
    if (next == std::string::npos) next = head.size();
    const std::string line = head.substr(pos, next - pos);
    const size_t colon = line.find(':');
    if (colon == std::string::npos || colon == 0) return BadRequest(400, "malformed header");
    std::string name = absl::AsciiStrToLower(line.substr(0, colon));
    std::string value(absl::StripAsciiWhitespace(line.substr(colon + 1)));
    auto [it, inserted] = request.headers.emplace(name, value);
    if (!inserted) it->second += "," + value;
    pos = next + 2;
  }
  if (!request.Header("transfer-encoding").empty()) {
    return BadRequest(501, "chunked transfer encoding is not supported; send Content-Length");
  }
  uint64_t length = 0;
  const std::string cl = request.Header("content-length");
  if (!cl.empty() && !absl::SimpleAtoi(cl, &length)) return BadRequest(400, "bad Content-Length");
  if (length > options.max_body_bytes) return BadRequest(413, "request body too large");
  if (buffer.size() < end + 4 + length) return std::nullopt;
  request.body = buffer.substr(end + 4, length);
  buffer.erase(0, end + 4 + length);
  return std::optional<HttpRequest>(std::move(request));
}

std::string HttpServer::SerializeResponse(const HttpResponse& response, bool keep_alive) {
  std::string out =
      absl::StrCat("HTTP/1.1 ", response.status, " ", Reason(response.status), "\r\n");
  bool has_type = false;
  for (const auto& [k, v] : response.headers) {
    absl::StrAppend(&out, k, ": ", v, "\r\n");
    has_type |= absl::AsciiStrToLower(k) == "content-type";
  }
  if (!has_type) out += "Content-Type: text/plain\r\n";
  absl::StrAppend(&out, "Content-Length: ", response.body.size(), "\r\n");
  out += keep_alive ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n";
  out += response.body;
  return out;
}

}  // namespace strata::api
