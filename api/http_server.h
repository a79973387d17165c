#pragma once
// The control plane's HTTP/1.1 server, on Boost.Beast's parser and serializer: one thread per
// connection (bounded) reading and writing with plain blocking calls. Keep-alive and
// pipelining (requests are answered in order), bounded header and body sizes (431, 413),
// chunked bodies refused (501), and a deadline per request so a slow client cannot hold a slot
// for long. Requests are handed to a handler; the server knows nothing of AWS.

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/connection_threads.h"

namespace strata::api {

struct HttpRequest {
  std::string method;
  std::string target;                          // Path and query as sent, percent-encoded.
  std::string path;                            // Part of target before '?'.
  std::string query;                           // Part after '?', or empty.
  std::map<std::string, std::string> headers;  // Names lowercased; repeated headers joined by ','.
  std::string body;
  std::string Header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
};

struct HttpResponse {
  int status = 200;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};

using HttpHandler = std::function<HttpResponse(const HttpRequest&)>;

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 8150;  // 0: pick a free port (see HttpServer::port()).
  size_t max_connections = 256;
  size_t max_header_bytes = 64 * 1024;
  size_t max_body_bytes = 8 * 1024 * 1024;
  // A request (headers and body) must arrive within this long, and a reply be taken; an idle
  // keep-alive connection is closed after it too.
  int receive_timeout_ms = 30000;
};

// Thread-safe. The handler runs on connection threads, concurrently.
class HttpServer {
 public:
  HttpServer(HttpServerOptions options, HttpHandler handler);
  ~HttpServer();  // Stops.
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds and starts accepting. kUnavailable if the address is in use.
  [[nodiscard]] absl::Status Start();
  // Stops accepting, closes every connection and joins their threads.
  void Stop();
  uint16_t port() const { return port_; }

  // Parses one request from `buffer` with the same parser and limits as a connection (consumed
  // on success). Returns nullopt when more bytes are needed; an error status (with the HTTP
  // status code in the message) for a bad request. Exposed for tests and the fuzz target.
  static absl::StatusOr<std::optional<HttpRequest>> ParseRequest(std::string& buffer,
                                                                 const HttpServerOptions& options);

 private:
  void AcceptLoop();
  void Serve(int fd);

  const HttpServerOptions options_;
  const HttpHandler handler_;
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stopping_{false};
  std::thread accept_thread_;
  common::ConnectionThreads connections_;
};

}  // namespace strata::api
