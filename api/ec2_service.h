#pragma once
// The EC2 Query API subset over the engine: volumes, snapshots, tags, snapshot permissions.
// Parses and validates parameters, calls the public engine API, writes EC2 XML. The only
// Status -> EC2 error mapping lives here.

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "ec2_image_calls.h"
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

// A completed ModifyVolume, for DescribeVolumesModifications. Grows apply at once (O(1)), so
// every modification is "completed" with progress 100.
struct Modification {
  std::string volume_id;
  uint64_t original_size_gib = 0, target_size_gib = 0;
  std::string original_type, target_type;
  uint64_t original_iops = 0, target_iops = 0;
  uint64_t original_throughput = 0, target_throughput = 0;
  uint64_t time_micros = 0;
};

// The latest modification per volume (kept per process). Thread-safe.
class Modifications {
 public:
  void Record(const Modification& m) {
    absl::MutexLock lock(&mu_);
    by_volume_[m.volume_id] = m;
  }
  std::vector<Modification> All() {
    absl::MutexLock lock(&mu_);
    std::vector<Modification> out;
    for (const auto& [id, m] : by_volume_) out.push_back(m);
    return out;
  }

 private:
  absl::Mutex mu_;
  std::map<std::string, Modification> by_volume_ ABSL_GUARDED_BY(mu_);
};

class Ec2Service {
 public:
  // `store` must outlive the service. Thread-safe.
  Ec2Service(Store& store, Ec2Options options) : store_(store), options_(std::move(options)) {}

  // Handles one authenticated request of `account` in `region`.
  HttpResponse Handle(const HttpRequest& request, const Account& account, Region& region);

  // An EC2 error response.
  static HttpResponse Error(int status, const std::string& code, const std::string& message);

 private:
  Store& store_;
  const Ec2Options options_;
  ClientTokens volume_tokens_;
  Modifications modifications_;
  StoreImageTasks store_tasks_;
};

}  // namespace strata::api
