#include "http_server.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <array>
#include <boost/asio/buffer.hpp>
#include <boost/asio/error.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <boost/throw_exception.hpp>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory_resource>
#include <optional>
#include <tuple>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace strata::api {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
// A request's header fields live in an arena of the connection's for that request: Beast
// allocates each field apart, which on the default allocator costs a malloc and free apiece.
using FieldAllocator = std::pmr::polymorphic_allocator<char>;
using Parser = http::request_parser<http::string_body, FieldAllocator>;
using Response = http::response<http::string_body>;

absl::Status BadRequest(int status, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(status, " ", why));
}

void Limit(Parser& parser, const HttpServerOptions& options) {
  parser.header_limit(static_cast<uint32_t>(options.max_header_bytes));
  parser.body_limit(options.max_body_bytes);
  parser.eager(true);
}

// The HTTP status a parse error earns (in the status's message, as BadRequest makes it).
absl::Status ParseError(const beast::error_code& ec) {
  if (ec == http::error::header_limit) return BadRequest(431, "headers too large");
  if (ec == http::error::body_limit) return BadRequest(413, "request body too large");
  if (ec == http::error::bad_content_length) return BadRequest(400, "bad Content-Length");
  if (ec == http::error::bad_field || ec == http::error::bad_value) {
    return BadRequest(400, "malformed header");
  }
  return BadRequest(400, absl::StrCat("malformed request: ", ec.message()));
}

// What Beast accepts and we do not: chunked bodies (AWS clients send Content-Length).
absl::Status CheckHeader(const Parser& parser) {
  if (parser.chunked() || parser.get().count(http::field::transfer_encoding) > 0) {
    return BadRequest(501, "chunked transfer encoding is not supported; send Content-Length");
  }
  const beast::string_view target = parser.get().target();
  if (target.empty() || target[0] != '/') return BadRequest(400, "bad request target");
  return absl::OkStatus();
}

HttpRequest ToRequest(Parser& parser) {
  Parser::value_type& message = parser.get();
  HttpRequest request;
  request.method = std::string(message.method_string());
  request.target = std::string(message.target());
  const size_t q = request.target.find('?');
  request.path = request.target.substr(0, q);
  request.query = q == std::string::npos ? "" : request.target.substr(q + 1);
  for (const auto& field : message) {
    const beast::string_view raw_name = field.name_string();
    const beast::string_view raw_value = field.value();
    std::string name = absl::AsciiStrToLower(absl::string_view(raw_name.data(), raw_name.size()));
    std::string value(
        absl::StripAsciiWhitespace(absl::string_view(raw_value.data(), raw_value.size())));
    auto [it, inserted] = request.headers.emplace(std::move(name), value);
    if (!inserted) it->second += "," + value;
  }
  request.body = std::move(message.body());
  return request;
}

Response ToResponse(HttpResponse response, bool keep_alive) {
  Response out{static_cast<http::status>(response.status), 11};
  bool has_type = false;
  for (const auto& [k, v] : response.headers) {
    out.insert(k, v);
    has_type |= absl::AsciiStrToLower(k) == "content-type";
  }
  if (!has_type) out.set(http::field::content_type, "text/plain");
  out.body() = std::move(response.body);
  out.keep_alive(keep_alive);
  out.prepare_payload();
  return out;
}

// A connected socket as Beast's SyncReadStream and SyncWriteStream: plain blocking recv and
// sendmsg (one system call per read or reply, as a raw socket costs), bounded by the socket's
// SO_RCVTIMEO/SO_SNDTIMEO (set at accept) and by a deadline per request, checked after each read:
// a client that trickles a request in is cut off within twice the timeout.
class DeadlineSocket {
 public:
  explicit DeadlineSocket(int fd) : fd_(fd) {}
  void set_deadline(std::chrono::steady_clock::time_point deadline) { deadline_ = deadline; }

  template <class MutableBuffers>
  size_t read_some(const MutableBuffers& buffers, beast::error_code& ec) {
    for (auto it = asio::buffer_sequence_begin(buffers); it != asio::buffer_sequence_end(buffers);
         ++it) {
      const asio::mutable_buffer b = *it;
      if (b.size() == 0) continue;
      for (;;) {
        const ssize_t n = ::recv(fd_, b.data(), b.size(), 0);
        if (n < 0 && errno == EINTR) continue;
        if (n > 0 && std::chrono::steady_clock::now() <= deadline_) {
          ec = {};
          return static_cast<size_t>(n);
        }
        if (n == 0) {
          ec = asio::error::eof;
        } else if (n > 0 || errno == EAGAIN || errno == EWOULDBLOCK) {
          ec = beast::error::timeout;
        } else {
          ec = beast::error_code(errno, boost::system::system_category());
        }
        return 0;
      }
    }
    ec = {};
    return 0;
  }
  template <class MutableBuffers>
  size_t read_some(const MutableBuffers& buffers) {
    beast::error_code ec;
    const size_t n = read_some(buffers, ec);
    if (ec) BOOST_THROW_EXCEPTION(boost::system::system_error(ec));
    return n;
  }

  template <class ConstBuffers>
  size_t write_some(const ConstBuffers& buffers, beast::error_code& ec) {
    iovec iov[16];
    int count = 0;
    for (auto it = asio::buffer_sequence_begin(buffers);
         it != asio::buffer_sequence_end(buffers) && count < 16; ++it) {
      const asio::const_buffer b = *it;
      if (b.size() == 0) continue;
      iov[count++] = {const_cast<void*>(b.data()), b.size()};
    }
    if (count == 0) {
      ec = {};
      return 0;
    }
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = static_cast<size_t>(count);
    for (;;) {
      const ssize_t n = ::sendmsg(fd_, &msg, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        ec = errno == EAGAIN || errno == EWOULDBLOCK
                 ? beast::error_code(beast::error::timeout)
                 : beast::error_code(errno, boost::system::system_category());
        return 0;
      }
      ec = {};
      return static_cast<size_t>(n);
    }
  }
  template <class ConstBuffers>
  size_t write_some(const ConstBuffers& buffers) {
    beast::error_code ec;
    const size_t n = write_some(buffers, ec);
    if (ec) BOOST_THROW_EXCEPTION(boost::system::system_error(ec));
    return n;
  }

 private:
  const int fd_;
  std::chrono::steady_clock::time_point deadline_ = std::chrono::steady_clock::time_point::max();
};

// Writes `response` through Beast's serializer; false when the client is gone or too slow.
bool WriteResponse(DeadlineSocket& socket, HttpResponse response, bool keep_alive) {
  Response message = ToResponse(std::move(response), keep_alive);
  beast::error_code ec;
  http::write(socket, message, ec);
  return !ec;
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
      DeadlineSocket socket(fd);
      (void)WriteResponse(socket, {503, {}, "too many connections\n"}, false);
      ::close(fd);
    }
  }
}

void HttpServer::Serve(int fd) {
  DeadlineSocket socket(fd);
  const auto timeout = std::chrono::milliseconds(options_.receive_timeout_ms);
  beast::flat_buffer buffer;
  while (!stopping_.load()) {
    std::array<std::byte, 8192> arena_bytes;
    std::pmr::monotonic_buffer_resource arena(arena_bytes.data(), arena_bytes.size());
    Parser parser(std::piecewise_construct, std::make_tuple(),
                  std::make_tuple(FieldAllocator(&arena)));
    Limit(parser, options_);
    // One deadline for the whole request, headers and body.
    socket.set_deadline(std::chrono::steady_clock::now() + timeout);
    beast::error_code ec;
    http::read_header(socket, buffer, parser, ec);
    absl::Status bad;
    if (!ec) bad = CheckHeader(parser);
    if (!ec && bad.ok() && !parser.is_done()) http::read(socket, buffer, parser, ec);
    if (ec && ec != http::error::end_of_stream && ec != beast::error::timeout &&
        ec != asio::error::eof && ec != asio::error::connection_reset) {
      bad = ParseError(ec);
    }
    if (!bad.ok()) {
      int status = 400;
      (void)absl::SimpleAtoi(std::string(bad.message()).substr(0, 3), &status);
      (void)WriteResponse(socket, {status, {}, std::string(bad.message()) + "\n"}, false);
      break;
    }
    if (ec) break;  // Closed, reset or timed out: nothing to answer.
    const bool keep_alive = parser.keep_alive();
    if (!WriteResponse(socket, handler_(ToRequest(parser)), keep_alive) || !keep_alive) break;
  }
}

absl::StatusOr<std::optional<HttpRequest>> HttpServer::ParseRequest(
    std::string& buffer, const HttpServerOptions& options) {
  Parser parser;
  Limit(parser, options);
  size_t used = 0;
  beast::error_code ec;
  // Bounded: each round consumes bytes or ends.
  while (!parser.is_done()) {
    const size_t n = parser.put(asio::buffer(buffer.data() + used, buffer.size() - used), ec);
    used += n;
    if (ec == http::error::need_more) return std::nullopt;
    if (ec) return ParseError(ec);
    if (parser.is_header_done()) {
      if (absl::Status bad = CheckHeader(parser); !bad.ok()) return bad;
    }
    if (n == 0 && !parser.is_done()) return std::nullopt;
  }
  HttpRequest request = ToRequest(parser);
  buffer.erase(0, used);
  return std::optional<HttpRequest>(std::move(request));
}

}  // namespace strata::api
