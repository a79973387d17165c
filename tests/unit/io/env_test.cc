// The Env seam: PosixEnv and MemEnv behave alike; FaultInjectionEnv drops unsynced data.

#include "strata/env.h"

#include <functional>
#include <vector>

#include "strata/fault_injection_env.h"
#include "test_util.h"

namespace strata {
namespace {

using ::strata::testing::Bytes;
using ::strata::testing::IsOk;
using ::strata::testing::StatusIs;

std::string ReadString(File& f, uint64_t offset, size_t n) {
  std::string out(n, '\0');
  EXPECT_THAT(f.Read(offset, std::as_writable_bytes(std::span(out.data(), n))), IsOk());
  return out;
}

class EnvTest : public ::testing::TestWithParam<bool> {
 protected:
  EnvTest() : mem_(NewMemEnv()), env_(GetParam() ? mem_.get() : Env::Default()) {}
  std::string Path(const std::string& name) { return dir_.path() + "/" + name; }
  ::strata::testing::TempDir dir_;
  std::unique_ptr<Env> mem_;
  Env* env_;
};

TEST_P(EnvTest, WriteReadSizeTruncatePunch) {
  auto f = env_->OpenFile(Path("a"), true);
  ASSERT_THAT(f, IsOk());
  ASSERT_THAT((*f)->Write(10, Bytes("hello")), IsOk());
  EXPECT_EQ(*(*f)->Size(), 15u);
  EXPECT_EQ(ReadString(**f, 10, 5), "hello");
  EXPECT_EQ(ReadString(**f, 0, 10), std::string(10, '\0'));
  EXPECT_EQ(ReadString(**f, 13, 5), std::string("lo\0\0\0", 5));  // Past the end: zeros.
  ASSERT_THAT((*f)->Truncate(1 << 20), IsOk());
  EXPECT_EQ(*(*f)->Size(), 1u << 20);
  ASSERT_THAT((*f)->PunchHole(11, 2), IsOk());
  EXPECT_EQ(ReadString(**f, 10, 5), std::string("h\0\0lo", 5));
  ASSERT_THAT((*f)->Sync(), IsOk());
}

TEST_P(EnvTest, LargeWritesReadBack) {
  // Writes that span pages, from unaligned offsets, the second inside the first.
  auto f = env_->OpenFile(Path("large"), true);
  ASSERT_THAT(f, IsOk());
  std::string first(1 << 20, '\0');
  for (size_t i = 0; i < first.size(); ++i) first[i] = static_cast<char>(i * 7 + i / 4096);
  const std::string second(64 * 1024 + 3, 'x');
  ASSERT_THAT((*f)->Write(4095, std::as_bytes(std::span(first))), IsOk());
  ASSERT_THAT((*f)->Write(4096 * 10 + 1, std::as_bytes(std::span(second))), IsOk());
  EXPECT_EQ(*(*f)->Size(), 4095 + first.size());
  std::string expected = first;
  expected.replace(4096 * 10 + 1 - 4095, second.size(), second);
  EXPECT_TRUE(ReadString(**f, 4095, first.size()) == expected);
  EXPECT_EQ(ReadString(**f, 0, 4095), std::string(4095, '\0'));
}

TEST_P(EnvTest, MissingFileIsNotFound) {
  EXPECT_THAT(env_->OpenFile(Path("missing"), false), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(env_->DeleteFile(Path("missing")), StatusIs(absl::StatusCode::kNotFound));
}

TEST_P(EnvTest, ListRenameDelete) {
  ASSERT_THAT(env_->OpenFile(Path("x"), true), IsOk());
  ASSERT_THAT(env_->RenameFile(Path("x"), Path("y")), IsOk());
  EXPECT_FALSE(env_->FileExists(Path("x")));
  EXPECT_TRUE(env_->FileExists(Path("y")));
  auto names = env_->ListDir(dir_.path());
  ASSERT_THAT(names, IsOk());
  EXPECT_THAT(*names, ::testing::Contains("y"));
  ASSERT_THAT(env_->DeleteFile(Path("y")), IsOk());
  EXPECT_FALSE(env_->FileExists(Path("y")));
}

TEST_P(EnvTest, LockIsExclusiveUntilReleased) {
  auto lock = env_->LockFile(Path("LOCK"));
  ASSERT_THAT(lock, IsOk());
  if (GetParam()) {  // flock is per open file description, so only MemEnv refuses in-process.
    EXPECT_THAT(env_->LockFile(Path("LOCK")), StatusIs(absl::StatusCode::kFailedPrecondition));
  }
  lock->reset();
  EXPECT_THAT(env_->LockFile(Path("LOCK")), IsOk());
}

INSTANTIATE_TEST_SUITE_P(PosixAndMem, EnvTest, ::testing::Bool());

TEST(FaultInjectionEnvTest, CrashDropsUnsyncedWritesAndKeepsSyncedOnes) {
  auto mem = NewMemEnv();
  FaultInjectionEnv env(mem.get());
  ASSERT_THAT(env.CreateDirs("/d"), IsOk());
  auto f = env.OpenFile("/d/f", true);
  ASSERT_THAT((*f)->Write(0, Bytes("synced")), IsOk());
  ASSERT_THAT((*f)->Sync(), IsOk());
  ASSERT_THAT(env.SyncDir("/d"), IsOk());
  ASSERT_THAT((*f)->Write(0, Bytes("XX")), IsOk());
  ASSERT_THAT((*f)->Write(8192, Bytes("tail")), IsOk());
  ASSERT_THAT(env.Crash(), IsOk());
  EXPECT_EQ(ReadString(**f, 0, 6), "synced");
  EXPECT_EQ(*(*f)->Size(), 6u);
}

TEST(FaultInjectionEnvTest, UnsyncedNewFileDisappearsAndPunchIsUndone) {
  auto mem = NewMemEnv();
  FaultInjectionEnv env(mem.get());
  auto f = env.OpenFile("/d/new", true);
  ASSERT_THAT((*f)->Write(0, Bytes("data")), IsOk());
  ASSERT_THAT((*f)->Sync(), IsOk());  // The directory entry is not synced.
  auto g = env.OpenFile("/d/old", true);
  ASSERT_THAT((*g)->Write(0, Bytes("keep")), IsOk());
  ASSERT_THAT((*g)->Sync(), IsOk());
  ASSERT_THAT(env.SyncDir("/d"), IsOk());
  auto h = env.OpenFile("/d/new2", true);
  ASSERT_THAT((*g)->PunchHole(0, 4), IsOk());
  ASSERT_THAT(env.Crash(), IsOk());
  EXPECT_TRUE(env.FileExists("/d/new"));  // Synced with its directory.
  EXPECT_FALSE(env.FileExists("/d/new2"));
  EXPECT_EQ(ReadString(**g, 0, 4), "keep");
}

TEST(FaultInjectionEnvTest, FailAfterFailsTheNthAndLaterOperations) {
  auto mem = NewMemEnv();
  FaultInjectionEnv env(mem.get());
  auto f = env.OpenFile("/f", true);
  env.FailAfter(1, absl::ResourceExhaustedError("ENOSPC"));
  EXPECT_THAT((*f)->Write(0, Bytes("a")), IsOk());
  EXPECT_THAT((*f)->Write(0, Bytes("b")), StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_THAT((*f)->Sync(), StatusIs(absl::StatusCode::kResourceExhausted));
  env.ClearFaults();
  EXPECT_THAT((*f)->Sync(), IsOk());
}

TEST(FaultInjectionEnvTest, EveryCallSiteCountsAndCanFail) {
  auto mem = NewMemEnv();
  FaultInjectionEnv env(mem.get());
  const std::vector<std::function<absl::Status()>> calls = {
      [&] { return env.CreateDirs("/d"); },
      [&] { return env.OpenFile("/d/f", true).status(); },
      [&] { return env.ListDir("/d").status(); },
      [&] { return env.LockFile("/d/LOCK").status(); },
      [&] { return env.SyncDir("/d"); },
      [&] { return env.RenameFile("/d/f", "/d/g"); },
      [&] { return env.DeleteFile("/d/g"); },
  };
  for (size_t i = 0; i < calls.size(); ++i) {
    const int64_t before = env.operations();
    env.InjectAt(0, {.status = absl::DataLossError("injected"), .transient = true});
    EXPECT_THAT(calls[i](), StatusIs(absl::StatusCode::kDataLoss)) << "call " << i;
    EXPECT_EQ(env.operations(), before + 1) << "call " << i;
    EXPECT_THAT(calls[i](), IsOk()) << "call " << i << ": a transient fault fails once";
  }
  auto f = env.OpenFile("/d/h", true);
  ASSERT_THAT(f, IsOk());
  env.InjectAt(0, {.status = absl::DataLossError("injected")});
  EXPECT_THAT((*f)->Size(), StatusIs(absl::StatusCode::kDataLoss));
}

TEST(FaultInjectionEnvTest, AShortWriteLandsWholeSectorsOfItsPrefix) {
  auto mem = NewMemEnv();
  FaultInjectionEnv env(mem.get());
  auto f = env.OpenFile("/f", true);
  env.InjectAt(0, {.status = absl::ResourceExhaustedError("injected ENOSPC"),
                   .transient = true,
                   .short_write = true});
  EXPECT_THAT((*f)->Write(0, Bytes(std::string(4096, 'w'))),
              StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_EQ(*(*f)->Size(), 2048u);
  EXPECT_EQ(ReadString(**f, 0, 2048), std::string(2048, 'w'));
}

// As on Linux: a failed fsync drops the dirty pages it could not write, and a later fsync that
// succeeds does not bring them back; only writing them again does.
TEST(FaultInjectionEnvTest, AFailedSyncLosesItsPagesForGood) {
  auto mem = NewMemEnv();
  FaultInjectionEnv env(mem.get());
  auto f = env.OpenFile("/d/f", true);
  ASSERT_THAT((*f)->Write(0, Bytes(std::string(8192, 'o'))), IsOk());
  ASSERT_THAT((*f)->Sync(), IsOk());
  ASSERT_THAT(env.SyncDir("/d"), IsOk());
  ASSERT_THAT((*f)->Write(0, Bytes(std::string(8192, 'n'))), IsOk());
  env.InjectAt(0, {.status = absl::DataLossError("injected EIO"), .transient = true});
  EXPECT_THAT((*f)->Sync(), StatusIs(absl::StatusCode::kDataLoss));
  ASSERT_THAT((*f)->Write(4096, Bytes(std::string(4096, 'a'))), IsOk());  // Page 1 again.
  ASSERT_THAT((*f)->Sync(), IsOk());
  ASSERT_THAT(env.Crash(), IsOk());
  EXPECT_EQ(ReadString(**f, 0, 4096), std::string(4096, 'o'));  // Lost with the failed sync.
  EXPECT_EQ(ReadString(**f, 4096, 4096), std::string(4096, 'a'));
}

TEST(FaultInjectionEnvTest, TornCrashKeepsSomeUnsyncedSectors) {
  auto mem = NewMemEnv();
  FaultInjectionEnv env(mem.get());
  auto f = env.OpenFile("/d/f", true);
  ASSERT_THAT((*f)->Write(0, Bytes(std::string(8192, 'o'))), IsOk());
  ASSERT_THAT((*f)->Sync(), IsOk());
  ASSERT_THAT(env.SyncDir("/d"), IsOk());
  ASSERT_THAT((*f)->Write(0, Bytes(std::string(8192, 'n'))), IsOk());
  ASSERT_THAT(env.Crash(/*tear=*/true, /*seed=*/7), IsOk());
  const std::string got = ReadString(**f, 0, 8192);
  for (size_t sector = 0; sector < 8192; sector += 512) {
    // Each sector is wholly old or wholly new.
    EXPECT_EQ(got.substr(sector, 512).find_first_not_of(got[sector]), std::string::npos);
  }
  EXPECT_NE(got.find('o'), std::string::npos);
  EXPECT_NE(got.find('n'), std::string::npos);
}

}  // namespace
}  // namespace strata
