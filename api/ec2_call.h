#pragma once
// What every EC2 Query call shares: the request it answers (Ec2CallContext), the state kept
// per process (client tokens, store-image tasks), and Ec2CallBase, from
// which each family of calls derives in a file of its own: ec2_volume_calls.cc,
// ec2_snapshot_calls.cc, ec2_account_calls.cc (tags, EBS encryption defaults, accounts,
// regions), ec2_protection_calls.cc (snapshot locks, the Recycle Bin), and over ImageCallBase
// (ec2_image_call_base.h) ec2_image_calls.cc, ec2_image_settings_calls.cc, ec2_image_task_calls.cc
// and ec2_instance_calls.cc.

#include <atomic>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "ec2_common.h"

namespace strata::api {

using Tags = std::map<std::string, std::string>;

struct Ec2Options {
  // Where CreateStoreImageTask writes bundles: one subdirectory per bucket. Empty: store and
  // restore tasks are refused.
  std::string bucket_dir;
  // How an export is reached over NBD, with "{export}" for the volume id (shown per volume in
  // DescribeInstances as strataNbdUri); {access_key_id} is the caller's (the NBD TLS
  // identity). Empty: not shown.
  std::string nbd_uri_template;
};

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

// CreateStoreImageTask's tasks, each run on its own thread (kept per process). Thread-safe.
class StoreImageTasks {
 public:
  struct Task {
    std::string image_id, bucket, object_key, owner;
    uint64_t start_micros = 0;
    std::atomic<int> progress{0};
    std::string state = "InProgress";  // InProgress, Completed, Failed. Guarded by the tasks' mu.
    std::string failure;
  };
  ~StoreImageTasks();
  // Starts writing `image_id` as a bundle; kFailedPrecondition if a task for it runs.
  absl::Status Start(Region& region, const std::string& image_id, const std::string& dir,
                     const std::string& bucket, const std::string& object_key,
                     const std::string& owner);
  struct View {
    std::string image_id, bucket, object_key, owner, state, failure;
    uint64_t start_micros;
    int progress;
  };
  std::vector<View> List();

 private:
  absl::Mutex mu_;
  std::vector<std::shared_ptr<Task>> tasks_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> threads_ ABSL_GUARDED_BY(mu_);
};

// One EC2 request. Every reference outlives the call.
struct Ec2CallContext {
  Store& store;
  Region& region;
  const Account& account;
  const QueryParams& p;
  ClientTokens& tokens;
  const Ec2Options& options;
  StoreImageTasks& tasks;
  const std::string& host;  // The request's Host header.
  XmlWriter& x;             // The response body, opened by the caller.
};

// The families of calls: each runs `action` when it is one of its own, writing the response
// into c.x, and returns nullopt otherwise.
std::optional<Result> RunVolumeCall(const Ec2CallContext& c, const std::string& action);
std::optional<Result> RunSnapshotCall(const Ec2CallContext& c, const std::string& action);
std::optional<Result> RunAccountCall(const Ec2CallContext& c, const std::string& action);
std::optional<Result> RunImageFamilyCall(const Ec2CallContext& c, const std::string& action);
std::optional<Result> RunImageSettingsCall(const Ec2CallContext& c, const std::string& action);
std::optional<Result> RunImageTaskCall(const Ec2CallContext& c, const std::string& action);
std::optional<Result> RunInstanceCall(const Ec2CallContext& c, const std::string& action);
std::optional<Result> RunProtectionCall(const Ec2CallContext& c, const std::string& action);

class Ec2CallBase {
 protected:
  explicit Ec2CallBase(const Ec2CallContext& c)
      : store_(c.store),
        region_(c.region),
        account_(c.account),
        p_(c.p),
        tokens_(c.tokens),
        options_(c.options),
        tasks_(c.tasks),
        host_(c.host),
        x_(c.x) {}

  // Runs the member of `calls` that `actions` names for `action`, or returns nullopt.
  template <typename Calls>
  static std::optional<Result> Dispatch(Calls& calls,
                                        const std::map<std::string, Result (Calls::*)()>& actions,
                                        const std::string& action) {
    auto it = actions.find(action);
    if (it == actions.end()) return std::nullopt;
    return (calls.*(it->second))();
  }

  // The latest modification of `v` (v.modification must be set).
  static void WriteModification(XmlWriter& x, const VolumeInfo& v);
  static bool CanUseSnapshot(const Account& account, const SnapshotInfo& s, Store& store);
  static void WriteAttachment(XmlWriter& x, const VolumeInfo& v, const std::string& state);
  static void WriteVolume(XmlWriter& x, const VolumeInfo& v, const std::string& zone);
  static void WriteSnapshot(XmlWriter& x, const SnapshotInfo& s, const std::string& owner);

  std::string Zone() const { return region_.name() + "a"; }
  // A volume the caller owns; kNotFound (as EC2 says it) for any other.
  absl::StatusOr<VolumeInfo> OwnedVolume(const std::string& id);
  // An owned volume this node serves, to change; kFailedPrecondition (IncorrectState) naming the
  // node for one another node of the region serves (RADOS).
  absl::StatusOr<VolumeInfo> ServedVolume(const std::string& id);
  // A snapshot the caller owns, or (unless `must_own`) may use; kNotFound for any other.
  absl::StatusOr<SnapshotInfo> VisibleSnapshot(const std::string& id, bool must_own);
  // The owner to show: `owner`, or the first account for resources made before accounts.
  std::string OwnerOf(const std::string& owner);

  Store& store_;
  Region& region_;
  const Account& account_;
  const QueryParams& p_;
  ClientTokens& tokens_;
  const Ec2Options& options_;
  StoreImageTasks& tasks_;
  const std::string& host_;
  XmlWriter& x_;
};

}  // namespace strata::api
