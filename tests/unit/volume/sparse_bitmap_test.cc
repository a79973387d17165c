#include "volume/sparse_bitmap.h"

#include "test_util.h"

namespace strata::volume {
namespace {

TEST(SparseBitmapTest, SetTestClearAndScan) {
  SparseBitmap bitmap(1 << 20);
  EXPECT_FALSE(bitmap.Test(5));
  EXPECT_TRUE(bitmap.Set(5));
  EXPECT_FALSE(bitmap.Set(5));
  EXPECT_TRUE(bitmap.Set(70000));
  EXPECT_EQ(bitmap.Count(), 2u);
  EXPECT_EQ(bitmap.NextSet(0), 5u);
  EXPECT_EQ(bitmap.NextSet(6), 70000u);
  EXPECT_EQ(bitmap.NextSet(70001), std::nullopt);
  EXPECT_EQ(bitmap.NextClear(5), 6u);
  EXPECT_TRUE(bitmap.Clear(5));
  EXPECT_FALSE(bitmap.Clear(5));
  EXPECT_FALSE(bitmap.Set(1 << 20));  // Out of range: ignored.
}

TEST(SparseBitmapTest, ThinUntilWrittenAndLeavesRoundTrip) {
  SparseBitmap bitmap(uint64_t{1} << 30);  // 64 TiB of 64 KiB chunks.
  EXPECT_EQ(bitmap.LeafBytes(3), std::nullopt);
  bitmap.Set(3 * meta::kBitmapLeafBits + 9);
  auto modified = bitmap.TakeModifiedLeaves();
  ASSERT_EQ(modified.size(), 1u);
  EXPECT_EQ(modified[0].first, 3u);
  EXPECT_TRUE(bitmap.TakeModifiedLeaves().empty());
  SparseBitmap copy(uint64_t{1} << 30);
  ASSERT_TRUE(copy.LoadLeaf(3, modified[0].second));
  EXPECT_TRUE(copy.Test(3 * meta::kBitmapLeafBits + 9));
  EXPECT_FALSE(copy.LoadLeaf(3, "short"));
}

TEST(SparseBitmapTest, ResizeKeepsBitsAndNextClearStopsAtEnd) {
  SparseBitmap bitmap(10);
  for (uint64_t i = 0; i < 10; ++i) bitmap.Set(i);
  EXPECT_EQ(bitmap.NextClear(0), std::nullopt);
  bitmap.Resize(100000);
  EXPECT_TRUE(bitmap.Test(9));
  EXPECT_EQ(bitmap.NextClear(0), 10u);
  bitmap.Set(99999);
  EXPECT_EQ(bitmap.NextSet(10), 99999u);
}

TEST(SparseBitmapTest, SetRangeSetsExactlyTheRangeAcrossWordsAndLeaves) {
  SparseBitmap bitmap(3 * meta::kBitmapLeafBits);
  const uint64_t first = meta::kBitmapLeafBits - 70;
  const uint64_t last = 2 * meta::kBitmapLeafBits + 3;
  bitmap.SetRange(first, last);
  EXPECT_EQ(bitmap.Count(), last - first + 1);
  EXPECT_EQ(bitmap.NextSet(0), first);
  EXPECT_EQ(bitmap.NextClear(first), last + 1);
  EXPECT_EQ(bitmap.TakeModifiedLeaves().size(), 3u);
  bitmap.SetRange(5, 5);
  EXPECT_TRUE(bitmap.Test(5));
  EXPECT_FALSE(bitmap.Test(4));
  EXPECT_FALSE(bitmap.Test(6));
  bitmap.SetRange(3 * meta::kBitmapLeafBits - 2, UINT64_MAX);  // Clipped at the end.
  EXPECT_EQ(bitmap.Count(), last - first + 1 + 1 + 2);
}

}  // namespace
}  // namespace strata::volume
