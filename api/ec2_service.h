#pragma once
// The EC2 Query API subset over the engine: volumes, snapshots, tags, snapshot permissions.
// Parses and validates parameters, calls the public engine API, writes EC2 XML. The only
// Status -> EC2 error mapping lives here.

#include <map>
#include <optional>
#include <string>

#include "absl/synchronization/mutex.h"
#include "http_server.h"
#include "query.h"
#include "strata/store.h"

namespace strata::api {

// ClientToken -> resource id, for idempotent retries (kept per process). Thread-safe.
class ClientTokens {
 public:
  std::optional<std::string> Find(const std::string& key) {
    absl::MutexLock lock(&mu_);
    auto it = ids_.find(key);
    if (it == ids_.end()) return std::nullopt;
    return it->second;
  }
  void Remember(const std::string& key, const std::string& id) {
    absl::MutexLock lock(&mu_);
    if (ids_.size() < kMaxTokens) ids_[key] = id;
  }

 private:
  static constexpr size_t kMaxTokens = 100000;
  absl::Mutex mu_;
  std::map<std::string, std::string> ids_ ABSL_GUARDED_BY(mu_);
};

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
  ClientTokens volume_tokens_;
};

}  // namespace strata::api
