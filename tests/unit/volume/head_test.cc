// FileHead: a head spans 4 TiB extent files, grows by adding them, and refuses sizes past the
// largest volume before it makes or changes anything.

#include "volume/head.h"

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

}  // namespace
}  // namespace strata::volume
