#pragma once
// The EC2 calls about images (AMIs), their governance settings, store/restore tasks and
// instances, over Region::images(). Called by Ec2Service for the actions it does not handle.

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

struct Ec2Options {
  // Where CreateStoreImageTask writes bundles: one subdirectory per bucket. Empty: store and
  // restore tasks are refused.
  std::string bucket_dir;
  // How an export is reached over NBD, with "{export}" for the volume id (shown per volume in
  // DescribeInstances as strataNbdUri). Empty: not shown.
  std::string nbd_uri_template;
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

// Runs `action` when it is an image or instance call (nullopt otherwise), writing its response
// body into `x` (opened by the caller).
std::optional<Result> RunImageCall(Store& store, Region& region, const Account& account,
                                   const QueryParams& p, const std::string& action,
                                   const Ec2Options& options, StoreImageTasks& tasks, XmlWriter& x);

}  // namespace strata::api
