// The image registry's invariants: a snapshot an image references cannot be deleted; a refused
// registration or launch leaves nothing behind; instance states follow the VM (a fake
// Hypervisor standing in for QEMU) and survive a restart as stopped; a bundle restores the
// image's bytes and refuses a damaged one without registering anything.

#include <filesystem>
#include <fstream>

#include "absl/synchronization/mutex.h"
#include "strata/store.h"
#include "test_backend.h"
#include "test_util.h"

namespace strata {
namespace {

using ::strata::testing::Pattern;
using ::strata::testing::StatusIs;
using ::strata::testing::TempDir;

constexpr uint64_t kGiB = 1ull << 30;

// Records starts and stops; a VM "runs" until Stop or Exit.
class FakeHypervisor final : public Hypervisor {
 public:
  std::string name() const override { return "fake"; }
  absl::Status Start(const Machine& machine, ExitFn on_exit) override {
    absl::MutexLock lock(&mu_);
    if (fail_next_start_) {
      fail_next_start_ = false;
      return absl::InternalError("no such machine");
    }
    running_[machine.instance_id] = std::move(on_exit);
    last_disks_ = machine.volume_ids;
    return absl::OkStatus();
  }
  absl::Status Stop(const std::string& id, bool) override {
    Exit(id, "stopped");
    return absl::OkStatus();
  }
  absl::StatusOr<std::string> Console(const std::string& id) override { return "console of " + id; }
  // The guest powers off (`clean`), or the VM fails.
  void Exit(const std::string& id, const std::string& why, bool clean = true) {
    ExitFn fn;
    {
      absl::MutexLock lock(&mu_);
      auto it = running_.find(id);
      if (it == running_.end()) return;
      fn = std::move(it->second);
      running_.erase(it);
    }
    fn(id, clean, why);
  }
  void FailNextStart() {
    absl::MutexLock lock(&mu_);
    fail_next_start_ = true;
  }
  std::vector<std::string> last_disks() {
    absl::MutexLock lock(&mu_);
    return last_disks_;
  }

 private:
  absl::Mutex mu_;
  std::map<std::string, ExitFn> running_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> last_disks_ ABSL_GUARDED_BY(mu_);
  bool fail_next_start_ ABSL_GUARDED_BY(mu_) = false;
};

class ImageRegistryTest : public ::testing::Test {
 protected:
  void Open() {
    StoreOptions options = ::strata::testing::TestStoreOptions(dir_.path());
    options.kms_root_key = RandomSecret(32);
    if (root_key_.empty()) root_key_ = options.kms_root_key;
    options.kms_root_key = root_key_;
    options.hypervisor = &hypervisor_;
    auto store = Store::Open(dir_.path(), options);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    region_ = store_->DefaultRegion();
  }
  void SetUp() override { Open(); }

  // A completed snapshot of a 1 GiB volume holding `bytes` of pattern `seed` at offset 0.
  std::string Snapshot(size_t bytes, uint64_t seed, const std::string& owner = "111111111111") {
    auto volume = region_->CreateVolume({.size_bytes = kGiB, .owner = owner});
    EXPECT_TRUE(volume.ok());
    Volume* v = *region_->GetVolume(volume->id);
    if (bytes > 0) {
      EXPECT_TRUE(v->Write(0, Pattern(bytes, seed)).ok());
    }
    auto snap = region_->CreateSnapshot({.volume_id = volume->id, .owner = owner});
    EXPECT_TRUE(snap.ok());
    EXPECT_TRUE(region_->WaitForSnapshot(snap->id, 60000).ok());
    EXPECT_TRUE(region_->DeleteVolume(volume->id).ok());
    return snap->id;
  }

  ImageInfo Request(const std::string& name, const std::string& snapshot) {
    ImageInfo image;
    image.name = name;
    image.owner = "111111111111";
    image.root_device_name = "/dev/sda1";
    BlockDeviceMapping root;
    root.device_name = "/dev/sda1";
    root.ebs = EbsBlockDevice{.snapshot_id = snapshot};
    image.mappings.push_back(root);
    return image;
  }

  TempDir dir_;
  SecretBytes root_key_;
  FakeHypervisor hypervisor_;
  std::unique_ptr<Store> store_;
  Region* region_ = nullptr;
};

TEST_F(ImageRegistryTest, ReferencedSnapshotCannotBeDeleted) {
  const std::string snap = Snapshot(4096, 1);
  auto image = region_->images().RegisterImage(Request("guarded", snap));
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(image->state, ImageState::kAvailable);
  absl::Status refused = region_->DeleteSnapshot(snap);
  EXPECT_THAT(refused, StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(AwsErrorCode(refused), "InvalidSnapshot.InUse");
  EXPECT_NE(refused.message().find(image->id), std::string::npos);
  EXPECT_TRUE(region_->DescribeSnapshot(snap).ok());
  ASSERT_TRUE(region_->images().DeregisterImage(image->id, false).ok());
  EXPECT_TRUE(region_->DeleteSnapshot(snap).ok());
}

TEST_F(ImageRegistryTest, RefusedRegistrationChangesNothing) {
  const std::string snap = Snapshot(0, 0);
  ImageInfo no_root = Request("no-root", snap);
  no_root.mappings[0].device_name = "/dev/sdb";
  ImageInfo too_small = Request("too-small", Snapshot(0, 0));
  too_small.mappings[0].ebs->volume_size_gib = 0;
  ImageInfo bad_name = Request("x", snap);
  for (const ImageInfo& request : {no_root, bad_name}) {
    EXPECT_FALSE(region_->images().RegisterImage(request).ok());
  }
  EXPECT_EQ(AwsErrorCode(region_->images().RegisterImage(no_root).status()),
            "InvalidBlockDeviceMapping");
  EXPECT_EQ(AwsErrorCode(region_->images().RegisterImage(bad_name).status()),
            "InvalidAMIName.Malformed");
  EXPECT_TRUE(region_->images().ListImages()->empty());
  EXPECT_TRUE(region_->DeleteSnapshot(snap).ok()) << "a refused image must not hold the snapshot";
}

TEST_F(ImageRegistryTest, InstanceStatesFollowTheVmAndARestart) {
  const std::string snap = Snapshot(8192, 2);
  auto image = region_->images().RegisterImage(Request("bootable", snap));
  ASSERT_TRUE(image.ok());
  LaunchRequest launch{.image_id = image->id, .owner = "111111111111"};
  auto instance = region_->images().RunInstance(launch);
  ASSERT_TRUE(instance.ok()) << instance.status();
  EXPECT_EQ(instance->state, InstanceState::kRunning);
  ASSERT_EQ(instance->volumes.size(), 1u);
  EXPECT_EQ(hypervisor_.last_disks(), std::vector<std::string>{instance->volumes[0].volume_id});
  auto volume = region_->DescribeVolume(instance->volumes[0].volume_id);
  ASSERT_TRUE(volume.ok());
  EXPECT_EQ(volume->attached_to, instance->id);
  EXPECT_EQ(volume->snapshot_id, snap);

  hypervisor_.Exit(instance->id, "guest powered off");
  auto after = region_->images().DescribeInstance(instance->id);
  EXPECT_EQ(after->state, InstanceState::kStopped);
  EXPECT_NE(after->state_reason.find("InstanceInitiatedShutdown"), std::string::npos);

  // A VM that fails is stopped as a server error, with why.
  ASSERT_TRUE(region_->images().StartInstance(instance->id).ok());
  hypervisor_.Exit(instance->id, "QEMU exited with status 1: cannot open disk", /*clean=*/false);
  after = region_->images().DescribeInstance(instance->id);
  EXPECT_EQ(after->state, InstanceState::kStopped);
  EXPECT_EQ(after->state_reason.rfind("Server.InternalError", 0), 0u) << after->state_reason;
  EXPECT_NE(after->state_reason.find("cannot open disk"), std::string::npos);

  ASSERT_TRUE(region_->images().StartInstance(instance->id).ok());
  EXPECT_EQ(region_->images().DescribeInstance(instance->id)->state, InstanceState::kRunning);
  // A restart finds the VM gone: the instance is stopped, its volume still attached.
  store_.reset();
  Open();
  after = region_->images().DescribeInstance(instance->id);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->state, InstanceState::kStopped);
  EXPECT_EQ(region_->DescribeVolume(instance->volumes[0].volume_id)->attached_to, instance->id);

  hypervisor_.FailNextStart();
  auto failed = region_->images().StartInstance(instance->id);
  ASSERT_TRUE(failed.ok());
  EXPECT_EQ(failed->state, InstanceState::kStopped);
  EXPECT_NE(failed->state_reason.find("no such machine"), std::string::npos);

  auto terminated = region_->images().TerminateInstance(instance->id);
  ASSERT_TRUE(terminated.ok());
  EXPECT_EQ(terminated->state, InstanceState::kTerminated);
  EXPECT_THAT(region_->DescribeVolume(instance->volumes[0].volume_id),
              StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(ImageRegistryTest, LaunchPermissionAndRefusedLaunchLeavesNoVolume) {
  const std::string snap = Snapshot(4096, 3);
  auto image = region_->images().RegisterImage(Request("private", snap));
  ASSERT_TRUE(image.ok());
  const size_t volumes = region_->ListVolumes()->size();
  auto refused = region_->images().RunInstance({.image_id = image->id, .owner = "222222222222"});
  EXPECT_EQ(AwsErrorCode(refused.status()), "AuthFailure");
  LaunchRequest small{.image_id = image->id, .owner = "111111111111"};
  BlockDeviceMapping override;
  override.device_name = "/dev/sda1";
  override.ebs = EbsBlockDevice{.volume_size_gib = 0, .volume_type = "io1"};  // io1 needs Iops.
  small.mappings.push_back(override);
  EXPECT_FALSE(region_->images().RunInstance(small).ok());
  EXPECT_EQ(region_->ListVolumes()->size(), volumes);
  ASSERT_TRUE(region_->images()
                  .UpdateImage(image->id,
                               [](ImageInfo& i) {
                                 i.launch_permissions.push_back("222222222222");
                                 return absl::OkStatus();
                               })
                  .ok());
  EXPECT_TRUE(region_->images().RunInstance({.image_id = image->id, .owner = "222222222222"}).ok());
  // Block public access is on by default: "all" is refused and nothing changes.
  auto made_public = region_->images().UpdateImage(image->id, [](ImageInfo& i) {
    i.launch_permissions.push_back("all");
    return absl::OkStatus();
  });
  EXPECT_EQ(AwsErrorCode(made_public.status()), "OperationNotPermitted");
  EXPECT_FALSE(region_->images().DescribeImage(image->id)->is_public());
}

TEST_F(ImageRegistryTest, BundleRoundTripAndDamage) {
  const size_t bytes = 3 << 20;
  const std::string snap = Snapshot(bytes, 4);
  auto image = region_->images().RegisterImage(Request("bundled", snap));
  ASSERT_TRUE(image.ok());
  const std::string bucket = dir_.path() + "/bucket";
  int last_progress = -1;
  ASSERT_TRUE(
      region_->images()
          .StoreImage(image->id, bucket, "b.bin", "111111111111", [&](int p) { last_progress = p; })
          .ok());
  EXPECT_EQ(last_progress, 100);
  // A flipped byte in the part: refused, naming it; nothing registered, no snapshot left.
  const std::string part = bucket + "/b.bin.part.000";
  const size_t snapshots = region_->ListSnapshots()->size();
  {
    std::fstream f(part, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    f.put('\x5a');
  }
  auto refused = region_->images().RestoreImage(bucket, "b.bin", "restored", "111111111111", {});
  EXPECT_THAT(refused, StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_NE(refused.status().message().find("b.bin.part.000"), std::string::npos);
  EXPECT_EQ(region_->images().ListImages()->size(), 1u);
  EXPECT_EQ(region_->ListSnapshots()->size(), snapshots);
  // Written again, it restores the same bytes.
  ASSERT_TRUE(region_->images().StoreImage(image->id, bucket, "b.bin", "111111111111", {}).ok());
  auto restored = region_->images().RestoreImage(bucket, "b.bin", "restored", "111111111111", {});
  ASSERT_TRUE(restored.ok()) << restored.status();
  EXPECT_EQ(restored->source_image_id, image->id);
  auto reader = region_->OpenSnapshot(restored->mappings[0].ebs->snapshot_id);
  ASSERT_TRUE(reader.ok());
  std::vector<std::byte> back(bytes);
  ASSERT_TRUE((*reader)->Read(0, back).ok());
  EXPECT_EQ(back, Pattern(bytes, 4));
  // Another account cannot unwrap the bundle's key (the owner's default EBS key).
  auto stranger = region_->images().RestoreImage(bucket, "b.bin", "stolen", "222222222222", {});
  EXPECT_FALSE(stranger.ok());
}

}  // namespace
}  // namespace strata
