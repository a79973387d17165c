// The EC2 calls that store an image as a bundle in a bucket directory and restore one
// (CreateStoreImageTask, DescribeStoreImageTasks, CreateRestoreImageTask), and the tasks
// that run them.

#include <algorithm>
#include <functional>
#include <regex>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "ec2_image_call_base.h"

namespace strata::api {
namespace {

class ImageTaskCalls : public ImageCallBase {
 public:
  explicit ImageTaskCalls(const Ec2CallContext& c) : ImageCallBase(c) {}

  std::optional<Result> Run(const std::string& action) {
    static const std::map<std::string, Result (ImageTaskCalls::*)()> kActions = {
        {"CreateStoreImageTask", &ImageTaskCalls::CreateStoreImageTask},
        {"DescribeStoreImageTasks", &ImageTaskCalls::DescribeStoreImageTasks},
        {"CreateRestoreImageTask", &ImageTaskCalls::CreateRestoreImageTask},
    };
    return Dispatch(*this, kActions, action);
  }

 private:
  absl::StatusOr<std::string> BucketDir() {
    if (options_.bucket_dir.empty()) {
      return WithAwsErrorCode(absl::FailedPreconditionError(
                                  "stratad has no --bucket-dir: store and restore tasks are off"),
                              "InvalidParameterValue");
    }
    const std::string bucket = p_.GetOr("Bucket", "");
    static const std::regex kBucket("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$");
    if (!std::regex_match(bucket, kBucket) || absl::StrContains(bucket, "..")) {
      return WithAwsErrorCode(
          absl::InvalidArgumentError(absl::StrCat("Invalid bucket name '", bucket, "'")),
          "InvalidParameterValue");
    }
    return absl::StrCat(options_.bucket_dir, "/", bucket);
  }

  Result CreateStoreImageTask() {
    const std::string id = p_.GetOr("ImageId", "");
    absl::StatusOr<ImageInfo> image = OwnedImage(id);
    if (!image.ok()) return Fail(image.status());
    absl::StatusOr<std::string> dir = BucketDir();
    if (!dir.ok()) return Fail(dir.status());
    const std::string key = absl::StrCat(id, ".bin");
    if (absl::Status s = tasks_.Start(region_, id, *dir, p_.GetOr("Bucket", ""), key, account_.id);
        !s.ok())
      return Fail(s);
    x_.Text("objectKey", key);
    return x_.Finish();
  }

  Result DescribeStoreImageTasks() {
    const std::vector<std::string> ids = p_.List("ImageId");
    const std::vector<Filter> filters = ParseFilters(p_);
    std::vector<StoreImageTasks::View> kept;
    for (const StoreImageTasks::View& t : tasks_.List()) {
      if (t.owner != account_.id) continue;
      if (!ids.empty() && std::find(ids.begin(), ids.end(), t.image_id) == ids.end()) continue;
      absl::StatusOr<bool> match =
          MatchesFilters(filters, {{"task-state", t.state}, {"bucket", t.bucket}}, {});
      if (!match.ok()) return Invalid(std::string(match.status().message()));
      if (*match) kept.push_back(t);
    }
    absl::StatusOr<Page> page = Paginate(p_, kept.size(), 1, 200);
    if (!page.ok()) return Invalid(std::string(page.status().message()));
    x_.Open("storeImageTaskResultSet");
    for (size_t i = page->begin; i < page->end; ++i) {
      const StoreImageTasks::View& t = kept[i];
      x_.Open("item");
      x_.Text("amiId", t.image_id);
      x_.Text("taskStartTime", IsoTime(t.start_micros));
      x_.Text("bucket", t.bucket);
      x_.Text("s3objectKey", t.object_key);
      x_.Number("progressPercentage", t.progress);
      x_.Text("storeTaskState", t.state);
      if (!t.failure.empty()) x_.Text("storeTaskFailureReason", t.failure);
      x_.Close();
    }
    x_.Close();
    if (!page->next_token.empty()) x_.Text("nextToken", page->next_token);
    return x_.Finish();
  }

  Result CreateRestoreImageTask() {
    absl::StatusOr<std::string> dir = BucketDir();
    if (!dir.ok()) return Fail(dir.status());
    const std::string key = p_.GetOr("ObjectKey", "");
    if (key.empty()) return Missing("ObjectKey");
    absl::StatusOr<std::map<std::string, std::map<std::string, std::string>>> tags =
        TagSpecsByType(p_, {"image", "snapshot"});
    if (!tags.ok()) return Invalid(std::string(tags.status().message()));
    absl::StatusOr<ImageInfo> image =
        images_.RestoreImage(*dir, key, p_.GetOr("Name", ""), account_.id, (*tags)["image"]);
    if (!image.ok()) return Fail(image.status());
    for (const BlockDeviceMapping& m : image->mappings) {
      if (m.ebs.has_value() && !(*tags)["snapshot"].empty())
        (void)region_.TagSnapshot(m.ebs->snapshot_id, (*tags)["snapshot"], {});
    }
    x_.Text("imageId", image->id);
    return x_.Finish();
  }
};

}  // namespace

std::optional<Result> RunImageTaskCall(const Ec2CallContext& c, const std::string& action) {
  return ImageTaskCalls(c).Run(action);
}

StoreImageTasks::~StoreImageTasks() {
  std::vector<std::thread> threads;
  {
    absl::MutexLock lock(&mu_);
    threads.swap(threads_);
  }
  for (std::thread& t : threads) t.join();
}

absl::Status StoreImageTasks::Start(Region& region, const std::string& image_id,
                                    const std::string& dir, const std::string& bucket,
                                    const std::string& object_key, const std::string& owner) {
  auto task = std::make_shared<Task>();
  task->image_id = image_id;
  task->bucket = bucket;
  task->object_key = object_key;
  task->owner = owner;
  task->start_micros = NowMicros();
  absl::MutexLock lock(&mu_);
  for (const std::shared_ptr<Task>& t : tasks_) {
    if (t->image_id == image_id && t->state == "InProgress") {
      return WithAwsErrorCode(absl::FailedPreconditionError(absl::StrCat(
                                  "a store task for ", image_id, " is already in progress")),
                              "IncorrectState");
    }
  }
  tasks_.push_back(task);
  threads_.emplace_back([this, &region, task, dir] {
    absl::Status s = region.images().StoreImage(task->image_id, dir, task->object_key, task->owner,
                                                [task](int percent) { task->progress = percent; });
    absl::MutexLock lock(&mu_);
    task->state = s.ok() ? "Completed" : "Failed";
    if (!s.ok()) task->failure = std::string(s.message());
  });
  return absl::OkStatus();
}

std::vector<StoreImageTasks::View> StoreImageTasks::List() {
  absl::MutexLock lock(&mu_);
  std::vector<View> out;
  for (const std::shared_ptr<Task>& t : tasks_) {
    out.push_back({t->image_id, t->bucket, t->object_key, t->owner, t->state, t->failure,
                   t->start_micros, t->progress.load()});
  }
  return out;
}

}  // namespace strata::api
