// A forced fingerprint collision must never make one volume read another's data.

#include "chunk/chunk_key.h"
#include "strata/store.h"
#include "test_backend.h"
#include "test_util.h"

namespace strata {
namespace {

using ::strata::testing::IsOk;
using ::strata::testing::Pattern;

chunk::Fingerprint Constant(uint32_t, std::span<const std::byte>) { return chunk::Fingerprint{}; }

TEST(CollisionTest, VolumesWithCollidingChunksEachReadTheirOwnData) {
  ::strata::testing::TempDir dir;
  StoreOptions options = ::strata::testing::TestStoreOptions(dir.path());
  options.background_work = false;
  auto store = Store::Open(dir.path(), options);
  ASSERT_THAT(store, IsOk());
  Region* region = (*store)->DefaultRegion();
  chunk::SetFingerprintFnForTesting(&Constant);  // Every chunk has the same fingerprint.
  std::vector<std::string> snaps;
  for (uint64_t v = 0; v < 3; ++v) {
    auto vol = region->CreateVolume({.size_bytes = 256 * 1024});
    ASSERT_THAT((*region->GetVolume(vol->id))->Write(0, Pattern(256 * 1024, 10 + v)), IsOk());
    auto snap = region->CreateSnapshot({.volume_id = vol->id});
    ASSERT_THAT(region->RunBackgroundWork(), IsOk());
    snaps.push_back(snap->id);
  }
  chunk::SetFingerprintFnForTesting(nullptr);
  for (uint64_t v = 0; v < 3; ++v) {
    auto reader = region->OpenSnapshot(snaps[v]);
    ASSERT_THAT(reader, IsOk());
    std::vector<std::byte> got(256 * 1024);
    ASSERT_THAT((*reader)->Read(0, got), IsOk());
    EXPECT_EQ(got, Pattern(256 * 1024, 10 + v)) << "volume " << v;
  }
  EXPECT_EQ(region->GetStats()->chunk_count, 12u);  // 3 volumes x 4 chunks, none shared.
}

}  // namespace
}  // namespace strata
