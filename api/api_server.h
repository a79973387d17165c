#pragma once
// The control plane: HTTP, SigV4 authentication, and dispatch by the signed service name to the
// AWS-compatible services over one Store.

#include <memory>
#include <string>

#include "ebs_service.h"
#include "ec2_service.h"
#include "http_server.h"
#include "replay_guard.h"
#include "strata/store.h"

namespace strata::api {

class ApiServer {
 public:
  // Signed requests remembered against replay (ReplayGuard); 0 turns the guard off, for
  // benchmarks that send one signed request over and over.
  static constexpr size_t kDefaultReplayCacheEntries = 65536;

  // `store` must outlive the server.
  ApiServer(Store& store, HttpServerOptions options, Ec2Options ec2_options = {},
            size_t replay_cache_entries = kDefaultReplayCacheEntries);
  [[nodiscard]] absl::Status Start() { return http_.Start(); }
  void Stop() { http_.Stop(); }
  uint16_t port() const { return http_.port(); }

  // Authenticates and serves one request (exposed for tests).
  HttpResponse Handle(const HttpRequest& request);

 private:
  Store& store_;
  Ec2Service ec2_;
  EbsService ebs_;
  std::unique_ptr<ReplayGuard> replay_guard_;  // Null when off.
  HttpServer http_;
};

}  // namespace strata::api
