#pragma once
// The EBS direct APIs (REST-JSON): write a snapshot block by block (StartSnapshot,
// PutSnapshotBlock, CompleteSnapshot) and read snapshots by block (ListSnapshotBlocks,
// ListChangedBlocks, GetSnapshotBlock). The only Status -> EBS error mapping lives here.

#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "http_server.h"
#include "strata/store.h"

namespace strata::api {

// The checked body of StartSnapshot (REST-JSON). Pure, so it can be fuzzed.
struct StartSnapshotArgs {
  int64_t volume_size_gib = 0;
  std::string parent_snapshot_id;
  std::string description;
  std::string client_token;
  int64_t timeout_minutes = 60;
  std::map<std::string, std::string> tags;
};
// kInvalidArgument with the reason for a malformed or out-of-range body.
absl::StatusOr<StartSnapshotArgs> ParseStartSnapshot(const std::string& body);

class EbsService {
 public:
  // `store` must outlive the service. Thread-safe.
  explicit EbsService(Store& store) : store_(store) {}
  HttpResponse Handle(const HttpRequest& request, const Account& account, Region& region);
  static HttpResponse Error(int status, const std::string& type, const std::string& message);

  // A direct snapshot being written: its builder volume and the SHA-256 of each block put.
  struct Upload {
    std::string account_id;
    std::string region;
    std::string builder_volume_id;
    uint64_t size_bytes = 0;
    uint64_t deadline_micros = 0;
    absl::Mutex mu;  // Serializes puts and completion.
    bool finished ABSL_GUARDED_BY(mu) = false;
    std::map<uint64_t, std::string> block_sha256 ABSL_GUARDED_BY(mu);  // Raw digests.
  };

 private:
  Store& store_;
  absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<Upload>> uploads_ ABSL_GUARDED_BY(mu_);  // By snapshot id.
  std::map<std::string, std::string> client_tokens_ ABSL_GUARDED_BY(mu_);        // -> snapshot id.
  friend class EbsCall;
};

}  // namespace strata::api
