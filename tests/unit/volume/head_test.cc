// FileHead: a head spans 4 TiB extent files, grows by adding them, and refuses sizes past the
// largest volume before it makes or changes anything. A pipe's bytes are spliced into it, and
// the next Sync covers them.

#include "volume/head.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>

#include "test_util.h"

namespace strata::volume {
namespace {

using ::strata::testing::IsOk;
using ::strata::testing::Pattern;
using ::strata::testing::StatusIs;

constexpr uint64_t kTiB = uint64_t{1} << 40;

class FileHeadTest : public ::testing::Test {
 protected:
  std::string Path() const { return dir_.path() + "/vol-test"; }
  bool ExtentExists(int index) const {
    return std::filesystem::exists(Path() + "." + std::to_string(index) + ".head");
  }

  ::strata::testing::TempDir dir_;
};

TEST_F(FileHeadTest, IoAcrossExtentsAndGrowthAddsThem) {
  auto head = FileHead::Open(Env::Default(), Path(), 4 * kTiB, /*create=*/true);
  ASSERT_THAT(head, IsOk());
  EXPECT_TRUE(ExtentExists(0));
  EXPECT_FALSE(ExtentExists(1));
  ASSERT_THAT((*head)->Grow(8 * kTiB), IsOk());
  EXPECT_TRUE(ExtentExists(1));
  // One write and one read across the boundary of the two extent files.
  const std::vector<std::byte> data = Pattern(8192, 1);
  ASSERT_THAT((*head)->Write(kHeadExtentBytes - 4096, data), IsOk());
  std::vector<std::byte> back(8192);
  ASSERT_THAT((*head)->Read(kHeadExtentBytes - 4096, back), IsOk());
  EXPECT_EQ(back, data);
  EXPECT_THAT((*head)->Sync(), IsOk());

  // Reopened at its size, it reads the same.
  head->reset();
  auto again = FileHead::Open(Env::Default(), Path(), 8 * kTiB, /*create=*/false);
  ASSERT_THAT(again, IsOk());
  std::fill(back.begin(), back.end(), std::byte{0});
  ASSERT_THAT((*again)->Read(kHeadExtentBytes - 4096, back), IsOk());
  EXPECT_EQ(back, data);
}

TEST_F(FileHeadTest, PastTheLargestVolumeIsRefusedAndChangesNothing) {
  EXPECT_THAT(FileHead::Open(Env::Default(), Path(), kMaxVolumeSizeBytes + kTiB, true),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_FALSE(ExtentExists(0));

  auto head = FileHead::Open(Env::Default(), Path(), 4 * kTiB, /*create=*/true);
  ASSERT_THAT(head, IsOk());
  EXPECT_THAT((*head)->Grow(kMaxVolumeSizeBytes + 4096),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_FALSE(ExtentExists(1));  // No extent file was made.
  EXPECT_EQ(std::filesystem::file_size(Path() + ".0.head"), 4 * kTiB);
  // The largest volume itself fits: its last extent ends at 64 TiB.
  ASSERT_THAT((*head)->Grow(kMaxVolumeSizeBytes), IsOk());
  EXPECT_TRUE(ExtentExists(15));
  EXPECT_FALSE(ExtentExists(16));
}

// Env::Default's files, counting the syncs of each.
class SyncCountingEnv final : public Env {
 public:
  absl::StatusOr<std::unique_ptr<File>> OpenFile(const std::string& path, bool create) override {
    auto file = Env::Default()->OpenFile(path, create);
    if (!file.ok()) return file.status();
    return std::make_unique<Counted>(std::move(*file), syncs);
  }
  absl::Status DeleteFile(const std::string& p) override { return Env::Default()->DeleteFile(p); }
  absl::Status RenameFile(const std::string& from, const std::string& to) override {
    return Env::Default()->RenameFile(from, to);
  }
  bool FileExists(const std::string& p) override { return Env::Default()->FileExists(p); }
  absl::Status CreateDirs(const std::string& p) override { return Env::Default()->CreateDirs(p); }
  absl::StatusOr<std::vector<std::string>> ListDir(const std::string& p) override {
    return Env::Default()->ListDir(p);
  }
  absl::Status SyncDir(const std::string& p) override { return Env::Default()->SyncDir(p); }
  absl::StatusOr<std::unique_ptr<FileLock>> LockFile(const std::string& p) override {
    return Env::Default()->LockFile(p);
  }
  uint64_t NowMicros() override { return Env::Default()->NowMicros(); }

  std::atomic<int> syncs{0};

 private:
  class Counted final : public File {
   public:
    Counted(std::unique_ptr<File> file, std::atomic<int>& syncs)
        : file_(std::move(file)), syncs_(syncs) {}
    absl::Status Read(uint64_t at, std::span<std::byte> out) override {
      return file_->Read(at, out);
    }
    absl::Status Write(uint64_t at, std::span<const std::byte> data) override {
      return file_->Write(at, data);
    }
    absl::Status Sync() override {
      ++syncs_;
      return file_->Sync();
    }
    absl::StatusOr<uint64_t> Size() override { return file_->Size(); }
    absl::Status Truncate(uint64_t size) override { return file_->Truncate(size); }
    absl::Status PunchHole(uint64_t at, uint64_t n) override { return file_->PunchHole(at, n); }
    int native_handle() const override { return file_->native_handle(); }

   private:
    std::unique_ptr<File> file_;
    std::atomic<int>& syncs_;
  };
};

// A non-blocking pipe of 1 MiB holding `bytes`.
struct TestPipe {
  explicit TestPipe(const std::vector<std::byte>& bytes) {
    EXPECT_EQ(::pipe2(fds, O_NONBLOCK | O_CLOEXEC), 0);
    EXPECT_GE(::fcntl(fds[1], F_SETPIPE_SZ, 1 << 20), 1 << 20);
    EXPECT_EQ(::write(fds[1], bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  }
  ~TestPipe() {
    ::close(fds[0]);
    ::close(fds[1]);
  }
  int fds[2] = {-1, -1};
};

TEST_F(FileHeadTest, SplicedBytesLandAtTheOffsetAndTheNextSyncCoversThem) {
  SyncCountingEnv env;
  auto head = FileHead::Open(&env, Path(), 8 * kTiB, /*create=*/true);
  ASSERT_THAT(head, IsOk());
  const std::vector<std::byte> data = Pattern(256 * 1024, 3);
  const uint64_t at = kHeadExtentBytes + 12345;  // In the second extent, unaligned.
  EXPECT_TRUE((*head)->CanSplice(at, data.size()));
  // A range across two extent files is for Write.
  EXPECT_FALSE((*head)->CanSplice(kHeadExtentBytes - 4096, 8192));
  EXPECT_FALSE((*head)->CanSplice(8 * kTiB, 4096));  // Past the head.
  ASSERT_THAT((*head)->Sync(), IsOk());
  const int before = env.syncs.load();
  TestPipe pipe(data);
  ASSERT_THAT((*head)->SpliceWrite(at, pipe.fds[0], data.size()), IsOk());
  std::vector<std::byte> back(data.size());
  ASSERT_THAT((*head)->Read(at, back), IsOk());
  EXPECT_EQ(back, data);
  ASSERT_THAT((*head)->Sync(), IsOk());
  EXPECT_EQ(env.syncs.load(), before + 1);  // The spliced extent, only.
  ASSERT_THAT((*head)->Sync(), IsOk());
  EXPECT_EQ(env.syncs.load(), before + 1);  // Nothing new to sync.
}

TEST_F(FileHeadTest, APipeThatRunsDryFailsTheSplice) {
  auto head = FileHead::Open(Env::Default(), Path(), 4 * kTiB, /*create=*/true);
  ASSERT_THAT(head, IsOk());
  TestPipe pipe(Pattern(4096, 4));
  EXPECT_THAT((*head)->SpliceWrite(0, pipe.fds[0], 8192), StatusIs(absl::StatusCode::kInternal));
  // A range the head cannot splice is refused before the pipe is touched.
  TestPipe full(Pattern(4096, 5));
  EXPECT_THAT((*head)->SpliceWrite(kHeadExtentBytes - 2048, full.fds[0], 4096),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  char byte;
  EXPECT_EQ(::read(full.fds[0], &byte, 1), 1);
}

TEST(MemHeadTest, FilesWithoutDescriptorsCannotSplice) {
  std::unique_ptr<Env> env = NewMemEnv();
  ASSERT_THAT(env->CreateDirs("/d"), IsOk());
  auto head = FileHead::Open(env.get(), "/d/vol-mem", 1 << 20, /*create=*/true);
  ASSERT_THAT(head, IsOk());
  EXPECT_FALSE((*head)->CanSplice(0, 4096));
}

}  // namespace
}  // namespace strata::volume
