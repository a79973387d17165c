// A full disk (a small tmpfs): writes fail with kResourceExhausted, the store stays consistent,
// and deleting snapshots (then GC) gives space back so writes work again.

#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <string>

#include "strata/fsck.h"
#include "strata/store.h"
#include "test_util.h"

namespace strata {
namespace {

using ::strata::testing::IsOk;
using ::strata::testing::Pattern;
using ::strata::testing::StatusIs;

constexpr uint64_t kMiB = 1 << 20;

// Writes `text` to the file at `path` (a /proc/self map).
bool WriteProcFile(const char* path, const std::string& text) {
  const int fd = ::open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ::close(fd);
  return ok;
}

// Root mounts directly. Anyone else becomes root of a new user and mount namespace (the process
// is still single-threaded here), where mounting a tmpfs is allowed: the test runs either way.
std::string MountCapability() {
  if (::geteuid() == 0) return "";
  const uid_t uid = ::geteuid();
  const gid_t gid = ::getegid();
  if (::unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0) {
    return std::string("not root, and unshare(CLONE_NEWUSER) failed: ") + std::strerror(errno);
  }
  if (!WriteProcFile("/proc/self/setgroups", "deny") ||
      !WriteProcFile("/proc/self/uid_map", "0 " + std::to_string(uid) + " 1") ||
      !WriteProcFile("/proc/self/gid_map", "0 " + std::to_string(gid) + " 1")) {
    return std::string("cannot map ids in the new user namespace: ") + std::strerror(errno);
  }
  return "";
}

// Unmounts at scope exit, so a failed assertion leaves no tmpfs behind.
class Unmount {
 public:
  explicit Unmount(std::string path) : path_(std::move(path)) {}
  ~Unmount() { ::umount2(path_.c_str(), MNT_DETACH); }

 private:
  std::string path_;
};

TEST(EnospcTest, FullDiskFailsWritesCleanlyAndDeletingSnapshotsFreesSpace) {
  const std::string cannot = MountCapability();
  ASSERT_EQ(cannot, "") << "cannot mount the small tmpfs this test fills";
  ::strata::testing::TempDir dir;
  // Heads and segments on a 24 MiB tmpfs; the catalog (RocksDB) on the regular disk through a
  // symlink, so this tests the data path's ENOSPC handling.
  const std::string region_dir = dir.path() + "/regions/local-1";
  std::filesystem::create_directories(region_dir);
  std::filesystem::create_directories(dir.path() + "/catalog-disk");
  ASSERT_EQ(mount("tmpfs", region_dir.c_str(), "tmpfs", 0, "size=24m"), 0) << strerror(errno);
  Unmount unmount(region_dir);
  std::filesystem::create_directory_symlink(dir.path() + "/catalog-disk", region_dir + "/catalog");
  {
    StoreOptions options;
    options.background_work = false;
    auto store = Store::Open(dir.path(), options);
    ASSERT_THAT(store, IsOk());
    Region* region = (*store)->DefaultRegion();
    auto vol = region->CreateVolume({.size_bytes = 64 * kMiB});
    ASSERT_THAT(vol, IsOk());
    Volume* volume = *region->GetVolume(vol->id);
    // 10 MiB of data, snapshotted: ~20 MiB used.
    ASSERT_THAT(volume->Write(0, Pattern(10 * kMiB, 1)), IsOk());
    auto snap = region->CreateSnapshot({.volume_id = vol->id});
    ASSERT_THAT(region->RunBackgroundWork(), IsOk());
    ASSERT_EQ(region->DescribeSnapshot(snap->id)->state, SnapshotState::kCompleted);
    // Fill the rest of the disk through the volume until it is full.
    absl::Status full;
    uint64_t written = 10 * kMiB;
    for (; written < 64 * kMiB; written += kMiB) {
      full = volume->Write(written, Pattern(kMiB, written));
      if (!full.ok()) break;
    }
    ASSERT_THAT(full, StatusIs(absl::StatusCode::kResourceExhausted));
    // Everything written before the failure still reads back.
    std::vector<std::byte> got(10 * kMiB);
    ASSERT_THAT(volume->Read(0, got), IsOk());
    EXPECT_EQ(got, Pattern(10 * kMiB, 1));
    // Free space: delete the snapshot, then collect garbage.
    ASSERT_THAT(region->DeleteSnapshot(snap->id), IsOk());
    ASSERT_THAT(region->RunBackgroundWork(), IsOk());
    auto reclaimed = region->CollectGarbage();
    ASSERT_THAT(reclaimed, IsOk());
    EXPECT_GE(*reclaimed, 9 * kMiB);
    ASSERT_THAT(volume->Write(written, Pattern(kMiB, 99)), IsOk());
    ASSERT_THAT(volume->Flush(), IsOk());
  }
  auto report = CheckStore(dir.path());
  ASSERT_THAT(report, IsOk());
  for (const std::string& f : report->findings) ADD_FAILURE() << f;
}

}  // namespace
}  // namespace strata
