#pragma once
// The EC2 Query API subset over the engine: volumes, snapshots, tags, snapshot permissions.
// Parses and validates parameters, calls the public engine API, writes EC2 XML. The only
// Status -> EC2 error mapping lives here.

#include <string>

#include "absl/synchronization/mutex.h"
#include "http_server.h"
#include "query.h"
#include "strata/store.h"

namespace strata::api {

class Ec2Service {
 public:
  // `store` must outlive the service. Thread-safe.
  explicit Ec2Service(Store& store) : store_(store) {}

  // Handles one authenticated request of `account` in `region`.
  HttpResponse Handle(const HttpRequest& request, const Account& account, Region& region);

  // An EC2 error response.
  static HttpResponse Error(int status, const std::string& code, const std::string& message);

 private:
  Store& store_;
  // ClientToken -> volume id, for idempotent CreateVolume retries (per process).
  absl::Mutex tokens_mu_;
  std::map<std::string, std::string> volume_tokens_ ABSL_GUARDED_BY(tokens_mu_);
};

}  // namespace strata::api
