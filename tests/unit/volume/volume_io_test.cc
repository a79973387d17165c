// Volume::SubmitRead / SubmitWrite through an IoRing: what is queued, what runs at once, and the
// guarantees of the synchronous calls kept (data, encryption, point-in-time snapshots, changed
// blocks, no lost write beside a read-modify-write). Volume::WriteSpliced: a pipe's bytes
// into chunks the volume holds, with the same guarantees, and nothing taken when it cannot.

#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cstdlib>
#include <optional>
#include <span>
#include <thread>

#include "strata/io_ring.h"
#include "strata/store.h"
#include "test_backend.h"
#include "test_util.h"

namespace strata {
namespace {

using ::strata::testing::IsOk;
using ::strata::testing::Pattern;
using ::strata::testing::StatusIs;

constexpr uint64_t kChunk = 64 * 1024;
constexpr uint64_t kMiB = 1 << 20;

// A request whose outcome the test looks at.
class TestIo final : public VolumeIo {
 public:
  void Done(absl::Status status) override { status_ = std::move(status); }
  bool done() const { return status_.has_value(); }
  const absl::Status& status() const { return *status_; }

 private:
  std::optional<absl::Status> status_;
};

class VolumeIoTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    if (!GetParam()) setenv("STRATA_NO_IO_URING", "1", 1);
    StoreOptions options = ::strata::testing::TestStoreOptions(dir_.path());
    options.background_work = false;
    options.kms_root_key = RandomSecret(32);
    // The ring queues I/O to head files; heads in RADOS are written through librados
    // (rados_head_test), so on the RADOS backend these volumes keep their heads in files.
    options.volume_heads_in_rados = false;
    auto store = Store::Open(dir_.path(), options);
    ASSERT_THAT(store, IsOk());
    store_ = std::move(*store);
    region_ = store_->DefaultRegion();
    auto ring = IoRing::Create(64);
    ASSERT_THAT(ring, IsOk());
    ring_ = std::move(*ring);
    EXPECT_EQ(ring_->uses_io_uring(), GetParam());
  }
  void TearDown() override { unsetenv("STRATA_NO_IO_URING"); }

  Volume* NewVolume(bool encrypted = false, uint64_t size = 4 * kMiB,
                    const std::string& snapshot = "") {
    auto info = region_->CreateVolume({.size_bytes = snapshot.empty() ? size : 0,
                                       .snapshot_id = snapshot,
                                       .encrypted = encrypted});
    EXPECT_THAT(info, IsOk());
    return info.ok() ? *region_->GetVolume(info->id) : nullptr;
  }
  // Writes the whole volume synchronously, so that the volume holds every chunk.
  std::vector<std::byte> Fill(Volume* v, uint64_t seed) {
    std::vector<std::byte> data = Pattern(v->size_bytes(), seed);
    EXPECT_THAT(v->Write(0, data), IsOk());
    return data;
  }
  std::string Snap(Volume* v) {
    auto info = region_->CreateSnapshot({.volume_id = v->id()});
    EXPECT_THAT(info, IsOk());
    EXPECT_THAT(region_->RunBackgroundWork(), IsOk());
    return info.ok() ? info->id : "";
  }
  std::vector<std::byte> ReadAll(Volume* v) {
    std::vector<std::byte> out(v->size_bytes());
    EXPECT_THAT(v->Read(0, out), IsOk());
    return out;
  }

  // A burst of 4 KiB writes, then reads, all queued, land in one wait, as Write and Read would.
  void Burst(Volume* v, std::vector<std::byte>& expected) {
    IoRing& ring = *ring_;
    constexpr int kRequests = 32;
    std::vector<TestIo> writes(kRequests);
    std::vector<std::vector<std::byte>> data;
    for (int i = 0; i < kRequests; ++i) {
      const uint64_t offset = (i * 37 % 64) * kChunk + (i % 16) * 4096;
      data.push_back(Pattern(4096, 100 + i));
      std::memcpy(expected.data() + offset, data.back().data(), 4096);
      v->SubmitWrite(offset, data.back(), false, ring, writes[i]);
      EXPECT_FALSE(writes[i].done()) << i;  // Queued.
    }
    EXPECT_EQ(ring.in_flight(), static_cast<unsigned>(kRequests));
    ASSERT_THAT(ring.Wait(), IsOk());
    for (const TestIo& io : writes) EXPECT_THAT(io.status(), IsOk());
    EXPECT_EQ(ReadAll(v), expected);

    std::vector<TestIo> reads(kRequests);
    std::vector<std::vector<std::byte>> out(kRequests, std::vector<std::byte>(8192));
    for (int i = 0; i < kRequests; ++i) {
      v->SubmitRead(i * 8192 * 3, out[i], ring, reads[i]);
      EXPECT_FALSE(reads[i].done()) << i;
    }
    ASSERT_THAT(ring.Wait(), IsOk());
    for (int i = 0; i < kRequests; ++i) {
      ASSERT_THAT(reads[i].status(), IsOk());
      EXPECT_TRUE(std::equal(out[i].begin(), out[i].end(), expected.begin() + i * 8192 * 3)) << i;
    }
  }

  // A loop thread queues `data` at `offset` and reaps it only 200 ms later; meanwhile a
  // snapshot is taken, which must wait for the write to land and hold `expected`.
  void SnapshotWhileALoopWrites(Volume* v, uint64_t offset, std::span<std::byte> data,
                                const std::vector<std::byte>& expected) {
    TestIo io;
    std::atomic<bool> waited{false};
    std::thread loop([&] {
      auto ring = IoRing::Create(8);  // A ring belongs to the thread that creates it.
      ASSERT_THAT(ring, IsOk());
      v->SubmitWrite(offset, data, false, **ring, io);
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      waited = true;
      ASSERT_THAT((*ring)->Wait(), IsOk());
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    auto info = region_->CreateSnapshot({.volume_id = v->id()});
    EXPECT_THAT(info, IsOk());
    EXPECT_TRUE(waited.load());  // CreateSnapshot returned only after the loop reaped.
    loop.join();
    EXPECT_THAT(io.status(), IsOk());
    if (!info.ok()) return;
    EXPECT_THAT(region_->RunBackgroundWork(), IsOk());
    auto snap = region_->OpenSnapshot(info->id);
    EXPECT_THAT(snap, IsOk());
    if (!snap.ok()) return;
    std::vector<std::byte> out(v->size_bytes());
    EXPECT_THAT((*snap)->Read(0, out), IsOk());
    EXPECT_EQ(out, expected);
  }

  ::strata::testing::TempDir dir_;
  std::unique_ptr<Store> store_;
  Region* region_ = nullptr;
  std::unique_ptr<IoRing> ring_;
};

TEST_P(VolumeIoTest, QueuedReadsAndWritesMatchTheSynchronousCalls) {
  Volume* v = NewVolume();
  // A file head over local segments reads from the page cache; stored chunks in RADOS wait on
  // the network (an NBD session then keeps large reads in flight together).
  EXPECT_EQ(v->reads_wait_on_network(), ::strata::testing::OnRados());
  std::vector<std::byte> expected = Fill(v, 1);
  Burst(v, expected);
}

TEST_P(VolumeIoTest, EncryptedVolumesAreEncipheredInTheRing) {
  Volume* v = NewVolume(/*encrypted=*/true);
  std::vector<std::byte> expected = Fill(v, 2);
  Burst(v, expected);
  // Part of a 4 KiB unit is a read-modify-write: it runs at once, and is right.
  TestIo io;
  std::vector<std::byte> small = Pattern(512, 3);
  std::memcpy(expected.data() + 5 * 512, small.data(), 512);
  v->SubmitWrite(5 * 512, small, false, *ring_, io);
  ASSERT_TRUE(io.done());
  EXPECT_THAT(io.status(), IsOk());
  std::vector<std::byte> back(1024);
  TestIo read;
  v->SubmitRead(5 * 512, back, *ring_, read);
  ASSERT_TRUE(read.done());
  EXPECT_TRUE(std::equal(back.begin(), back.end(), expected.begin() + 5 * 512));
  EXPECT_EQ(ReadAll(v), expected);
}

TEST_P(VolumeIoTest, ChunksNotHeldYetRunAtOnceAndReadThroughTheSnapshot) {
  Volume* source = NewVolume();
  const std::vector<std::byte> base = Fill(source, 4);
  const std::string snap = Snap(source);
  Volume* clone = NewVolume(false, 0, snap);
  // Lazy chunks: a copy-up runs synchronously; a read through the snapshot too on the local
  // backend, while on RADOS it waits on the cluster on one of the ring's helpers (QueueCall)
  // and finishes at the next wait.
  std::vector<std::byte> out(kChunk);
  TestIo read;
  clone->SubmitRead(3 * kChunk, out, *ring_, read);
  if (::strata::testing::OnRados()) {
    EXPECT_FALSE(read.done());
    ASSERT_THAT(ring_->Wait(), IsOk());
  }
  ASSERT_TRUE(read.done());
  EXPECT_THAT(read.status(), IsOk());
  EXPECT_TRUE(std::equal(out.begin(), out.end(), base.begin() + 3 * kChunk));
  std::vector<std::byte> expected = base;
  std::vector<std::byte> data = Pattern(4096, 5);
  std::memcpy(expected.data() + 3 * kChunk + 4096, data.data(), 4096);
  TestIo write;
  clone->SubmitWrite(3 * kChunk + 4096, data, false, *ring_, write);
  ASSERT_TRUE(write.done());
  EXPECT_THAT(write.status(), IsOk());
  // Now held: the next write to the chunk is queued.
  data = Pattern(4096, 6);
  std::memcpy(expected.data() + 3 * kChunk + 8192, data.data(), 4096);
  TestIo queued;
  clone->SubmitWrite(3 * kChunk + 8192, data, false, *ring_, queued);
  EXPECT_EQ(queued.done(), false);
  ASSERT_THAT(ring_->Wait(), IsOk());
  EXPECT_THAT(queued.status(), IsOk());
  EXPECT_EQ(ReadAll(clone), expected);
}

TEST_P(VolumeIoTest, BadRequestsFailAtOnceAndChangeNothing) {
  Volume* v = NewVolume();
  const std::vector<std::byte> before = Fill(v, 7);
  std::vector<std::byte> data(4096, std::byte{1});
  TestIo past;
  v->SubmitWrite(v->size_bytes(), data, false, *ring_, past);
  ASSERT_TRUE(past.done());
  EXPECT_THAT(past.status(), StatusIs(absl::StatusCode::kInvalidArgument));
  TestIo misaligned;
  v->SubmitRead(100, std::span(data).first(512), *ring_, misaligned);
  ASSERT_TRUE(misaligned.done());
  EXPECT_THAT(misaligned.status(), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(ring_->in_flight(), 0u);
  EXPECT_EQ(ReadAll(v), before);
}

TEST_P(VolumeIoTest, QueuedWritesAreChangedBlocksAndInTheNextSnapshot) {
  Volume* v = NewVolume();
  std::vector<std::byte> expected = Fill(v, 8);
  const std::string first = Snap(v);
  std::vector<std::byte> data = Pattern(4096, 9);
  std::memcpy(expected.data() + 10 * kChunk, data.data(), 4096);
  TestIo io;
  v->SubmitWrite(10 * kChunk, data, false, *ring_, io);
  ASSERT_THAT(ring_->Wait(), IsOk());
  ASSERT_THAT(io.status(), IsOk());
  auto changes = v->Changes(0, v->size_bytes(), 64);
  ASSERT_THAT(changes, IsOk());
  ASSERT_EQ(changes->size(), 3u);
  EXPECT_EQ((*changes)[1].changed, true);
  EXPECT_EQ((*changes)[1].length_bytes, kChunk);
  const std::string second = Snap(v);
  auto blocks = region_->ListChangedBlocks(first, second, "", 100);
  ASSERT_THAT(blocks, IsOk());
  ASSERT_EQ(blocks->blocks.size(), 1u);
  EXPECT_EQ(blocks->blocks[0].block_index, 10 * kChunk / kApiBlockBytes);
  auto snap = region_->OpenSnapshot(second);
  ASSERT_THAT(snap, IsOk());
  std::vector<std::byte> out(v->size_bytes());
  ASSERT_THAT((*snap)->Read(0, out), IsOk());
  EXPECT_EQ(out, expected);
}

// A snapshot taken while a write sits queued (not yet submitted by its loop) waits for it to
// land, and holds it whole.
TEST_P(VolumeIoTest, ASnapshotWaitsForQueuedWritesToLand) {
  Volume* v = NewVolume();
  std::vector<std::byte> expected = Fill(v, 10);
  std::vector<std::byte> data = Pattern(kChunk, 11);
  std::memcpy(expected.data() + 2 * kChunk, data.data(), kChunk);
  SnapshotWhileALoopWrites(v, 2 * kChunk, data, expected);
}

TEST_P(VolumeIoTest, LargeEncipheredWritesRunOnHelpersAndASnapshotWaitsForThem) {
  // A 1 MiB write to an encrypted volume is enciphered and written on the ring's helpers (the
  // loop meanwhile takes other work); it lands in the volume, and a snapshot taken while it
  // runs waits for it.
  Volume* v = NewVolume(/*encrypted=*/true);
  std::vector<std::byte> expected = Fill(v, 12);
  const std::vector<std::byte> plain = Pattern(kMiB, 13);
  std::memcpy(expected.data() + kMiB, plain.data(), kMiB);
  std::vector<std::byte> data = plain;
  SnapshotWhileALoopWrites(v, kMiB, data, expected);
  EXPECT_NE(data, plain);  // Enciphered in place.
  EXPECT_EQ(ReadAll(v), expected);

  // It runs at once, on a helper: no Wait starts it (a queued write would still wait for one,
  // neither running nor done).
  const std::vector<std::byte> again = Pattern(kMiB, 14);
  std::memcpy(expected.data() + 2 * kMiB, again.data(), kMiB);
  data = again;
  TestIo io;
  v->SubmitWrite(2 * kMiB, data, false, *ring_, io);
  const unsigned running = ring_->ReapCompleted();
  EXPECT_TRUE(running == 1 || io.done());
  ASSERT_THAT(ring_->Wait(), IsOk());
  ASSERT_THAT(io.status(), IsOk());
  EXPECT_EQ(ReadAll(v), expected);
}

TEST_P(VolumeIoTest, LargeEncipheredReadsAreSplitWhileAProcessorIsIdle) {
  // A 1 MiB read of an encrypted volume, with a processor idle (this test's ring is the only
  // busy one), is read in two halves, the second read and deciphered on a helper. Both come
  // back in plaintext, a hole in each (zeroed ranges) as zeros.
  Volume* v = NewVolume(/*encrypted=*/true);
  std::vector<std::byte> expected = Fill(v, 15);
  for (const uint64_t hole : {kMiB + 8192, kMiB + kMiB / 2 + 4 * 4096}) {
    ASSERT_THAT(v->WriteZeroes(hole, 3 * 4096), IsOk());
    std::fill_n(expected.begin() + static_cast<ptrdiff_t>(hole), 3 * 4096, std::byte{0});
  }
  std::vector<std::byte> out(kMiB);
  TestIo io;
  v->SubmitRead(kMiB, out, *ring_, io);
  const unsigned running = ring_->ReapCompleted();
  if (::strata::testing::Processors() > 1) {
    // Running at once, on a helper: no Wait starts it (a queued read would still wait for one,
    // neither running nor done).
    EXPECT_TRUE(running == 1 || io.done());
  }
  ASSERT_THAT(ring_->Wait(), IsOk());
  ASSERT_THAT(io.status(), IsOk());
  EXPECT_TRUE(std::equal(out.begin(), out.end(), expected.begin() + kMiB));
  // Not split at an odd size or offset in units (the halves still meet at a unit boundary),
  // nor below 256 KiB: each reads right.
  for (const auto& [offset, length] :
       {std::pair{kMiB + 4096, 5 * 65536 + 3 * 4096}, std::pair{3 * kMiB, 64 * 4096 - 4096}}) {
    std::vector<std::byte> part(length);
    TestIo read;
    v->SubmitRead(offset, part, *ring_, read);
    ASSERT_THAT(ring_->Wait(), IsOk());
    ASSERT_THAT(read.status(), IsOk());
    EXPECT_TRUE(std::equal(part.begin(), part.end(), expected.begin() + offset)) << offset;
  }
}

TEST_P(VolumeIoTest, AVolumeGrowsPastHeadExtentsWhileHelpersDoItsIo) {
  // Large reads and writes of an encrypted volume run on the ring's helpers without the
  // volume's gate, and a queued write's completion marks its extent unsynced without it.
  // Growing the volume past its 4 TiB head extents meanwhile adds extent files beside them;
  // the extent table never moves (FileHead::kMaxExtents), and every request reads back what
  // it wrote. (With a growing vector instead, ASan could see a helper read the freed table.)
  constexpr uint64_t kTiB = uint64_t{1} << 40;
  Volume* v = NewVolume(/*encrypted=*/true, 4 * kTiB);
  ASSERT_NE(v, nullptr);
  std::vector<std::byte> expected = Pattern(4 * kMiB, 16);
  ASSERT_THAT(v->Write(0, expected), IsOk());  // Held: later large I/O goes to the helpers.
  std::atomic<bool> growing{true};
  std::thread loop([&] {
    auto ring = IoRing::Create(8);
    ASSERT_THAT(ring, IsOk());
    for (uint64_t i = 0; growing.load() || i < 4; ++i) {
      const uint64_t at = i % 4 * kMiB;
      std::vector<std::byte> data = Pattern(kMiB, 17 + i);
      std::vector<std::byte> back(kMiB);
      TestIo write;
      TestIo read;
      v->SubmitWrite(at, data, false, **ring, write);
      ASSERT_THAT((*ring)->Wait(), IsOk());
      v->SubmitRead(at, back, **ring, read);
      ASSERT_THAT((*ring)->Wait(), IsOk());
      ASSERT_THAT(write.status(), IsOk());
      ASSERT_THAT(read.status(), IsOk());
      ASSERT_EQ(back, Pattern(kMiB, 17 + i)) << i;
    }
  });
  for (uint64_t size = 5 * kTiB; size <= 16 * kTiB; size += kTiB) {
    EXPECT_THAT(region_->GrowVolume(v->id(), size), IsOk());
  }
  growing = false;
  loop.join();
  EXPECT_EQ(v->size_bytes(), 16 * kTiB);
}

// A read-modify-write of a 4 KiB unit (a 512-byte write to an encrypted volume) on another
// thread waits for a queued write to the same unit: the queued write's other bytes survive.
TEST_P(VolumeIoTest, AReadModifyWriteWaitsForAQueuedWriteToTheSameUnit) {
  Volume* v = NewVolume(/*encrypted=*/true);
  std::vector<std::byte> expected = Fill(v, 12);
  std::vector<std::byte> whole = Pattern(4096, 13);
  const std::vector<std::byte> small = Pattern(512, 14);
  std::memcpy(expected.data() + 8192, whole.data(), 4096);
  std::memcpy(expected.data() + 8192 + 1024, small.data(), 512);
  TestIo io;
  v->SubmitWrite(8192, whole, false, *ring_, io);
  ASSERT_EQ(io.done(), false);
  std::thread other([&] { EXPECT_THAT(v->Write(8192 + 1024, small), IsOk()); });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_THAT(ring_->Wait(), IsOk());
  other.join();
  EXPECT_THAT(io.status(), IsOk());
  EXPECT_EQ(ReadAll(v), expected);
}

TEST_P(VolumeIoTest, ReadsOfAHeadInRadosAreInFlightTogetherAndMatch) {
  if (!::strata::testing::OnRados()) GTEST_SKIP() << "heads in RADOS: the RADOS backend only";
  // A second store on the same cluster whose volumes keep their heads in RADOS.
  ::strata::testing::TempDir dir;
  StoreOptions options = ::strata::testing::TestStoreOptions(dir.path());
  options.background_work = false;
  options.kms_root_key = RandomSecret(32);
  auto store = Store::Open(dir.path(), options);
  ASSERT_THAT(store, IsOk());
  Region* region = (*store)->DefaultRegion();
  for (const bool encrypted : {false, true}) {
    auto info = region->CreateVolume({.size_bytes = 8 * kMiB, .encrypted = encrypted});
    ASSERT_THAT(info, IsOk());
    Volume* v = *region->GetVolume(info->id);
    EXPECT_TRUE(v->reads_wait_on_network());
    std::vector<std::byte> expected = Pattern(v->size_bytes(), encrypted ? 12 : 11);
    ASSERT_THAT(v->Write(0, expected), IsOk());
    // Writes to one object queue behind the one in flight and go out together, in order: the
    // last of several overlapping writes wins, and a read right after sees it.
    for (uint64_t round = 0; round < 40; ++round) {
      const std::vector<std::byte> unit = Pattern(4096 * (1 + round % 3), 100 + round);
      const uint64_t at = (round % 5) * 2048 * 2;  // Overlapping runs in the first object.
      ASSERT_THAT(v->Write(at, unit), IsOk());
      std::copy(unit.begin(), unit.end(), expected.begin() + at);
    }
    std::vector<std::byte> first(64 * 1024);
    ASSERT_THAT(v->Read(0, first), IsOk());
    EXPECT_TRUE(std::equal(first.begin(), first.end(), expected.begin()));
    ASSERT_THAT(v->Flush(), IsOk());
    constexpr int kRequests = 24;
    std::vector<TestIo> reads(kRequests);
    std::vector<std::vector<std::byte>> out(kRequests);
    std::vector<uint64_t> offsets;
    for (int i = 0; i < kRequests; ++i) {
      // 4 KiB to 1 MiB in whole 4 KiB units (an encrypted volume's unaligned reads run at
      // once), some across the 4 MiB object boundary.
      const uint64_t length = i % 3 == 0 ? kMiB : 4096 * (i + 1);
      const uint64_t offset =
          i % 4 == 0 ? 4 * kMiB - length / 8192 * 4096 : (i * 307 % 1800) * 4096;
      offsets.push_back(offset);
      out[i].resize(length);
      v->SubmitRead(offset, out[i], *ring_, reads[i]);
      EXPECT_FALSE(reads[i].done()) << i;  // In flight, not run in turn.
    }
    EXPECT_EQ(ring_->in_flight(), static_cast<unsigned>(kRequests));
    ASSERT_THAT(ring_->Wait(), IsOk());
    for (int i = 0; i < kRequests; ++i) {
      ASSERT_TRUE(reads[i].done());
      EXPECT_THAT(reads[i].status(), IsOk());
      EXPECT_TRUE(std::equal(out[i].begin(), out[i].end(), expected.begin() + offsets[i]))
          << "read " << i << (encrypted ? " (encrypted)" : "");
    }
  }
}

// A non-blocking pipe of 1 MiB, for WriteSpliced.
class TestPipe {
 public:
  TestPipe() {
    EXPECT_EQ(::pipe2(fds_, O_NONBLOCK | O_CLOEXEC), 0);
    EXPECT_GE(::fcntl(fds_[1], F_SETPIPE_SZ, kMiB), static_cast<int>(kMiB));
  }
  ~TestPipe() {
    ::close(fds_[0]);
    ::close(fds_[1]);
  }
  void Put(std::span<const std::byte> bytes) {
    ASSERT_EQ(::write(fds_[1], bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  }
  int read_fd() const { return fds_[0]; }
  size_t held() const {
    int n = -1;
    EXPECT_EQ(::ioctl(fds_[0], FIONREAD, &n), 0);
    return static_cast<size_t>(n);
  }

 private:
  int fds_[2] = {-1, -1};
};

TEST_P(VolumeIoTest, SplicedWritesLandInHeldChunksAndAreInTheNextSnapshot) {
  Volume* v = NewVolume();
  std::vector<std::byte> expected = Fill(v, 20);
  const std::string first = Snap(v);
  const std::vector<std::byte> data = Pattern(kMiB, 21);
  const uint64_t at = kMiB + 3 * kChunk;  // 16 whole chunks.
  EXPECT_TRUE(v->SplicesWrite(at, data.size()));
  TestPipe pipe;
  pipe.Put(data);
  std::optional<absl::Status> written = v->WriteSpliced(at, pipe.read_fd(), data.size());
  ASSERT_TRUE(written.has_value());
  ASSERT_THAT(*written, IsOk());
  EXPECT_EQ(pipe.held(), 0u);
  std::memcpy(expected.data() + at, data.data(), data.size());
  // Sectors, not chunks: the write ends inside a chunk, which keeps its other bytes.
  const std::vector<std::byte> odd = Pattern(100 * 1024 + 512, 22);
  pipe.Put(odd);
  written = v->WriteSpliced(3 * kMiB - 512, pipe.read_fd(), odd.size());
  ASSERT_TRUE(written.has_value());
  ASSERT_THAT(*written, IsOk());
  std::memcpy(expected.data() + 3 * kMiB - 512, odd.data(), odd.size());
  EXPECT_EQ(ReadAll(v), expected);

  // Changed blocks since the first snapshot: the chunks written, and the next snapshot holds
  // them (a spliced write sets its dirty bits as a queued one does).
  auto changes = v->Changes(0, v->size_bytes(), 64);
  ASSERT_THAT(changes, IsOk());
  uint64_t changed = 0;
  for (const ChangeExtent& e : *changes) {
    if (e.changed) changed += e.length_bytes;
  }
  EXPECT_EQ(changed, kMiB + 3 * kChunk);  // 16 chunks, then the 3 the odd write touched.
  const std::string second = Snap(v);
  auto snap = region_->OpenSnapshot(second);
  ASSERT_THAT(snap, IsOk());
  std::vector<std::byte> out(v->size_bytes());
  ASSERT_THAT((*snap)->Read(0, out), IsOk());
  EXPECT_EQ(out, expected);
  auto blocks = region_->ListChangedBlocks(first, second, "", 100);
  ASSERT_THAT(blocks, IsOk());
  EXPECT_FALSE(blocks->blocks.empty());
}

TEST_P(VolumeIoTest, SplicedWritesThatCannotBeTakenLeaveThePipeAndTheVolumeAlone) {
  const std::vector<std::byte> data = Pattern(256 * 1024, 23);
  TestPipe pipe;
  pipe.Put(data);
  auto refused = [&](Volume* v, uint64_t at, const char* why) {
    EXPECT_FALSE(v->SplicesWrite(at, data.size())) << why;
    EXPECT_FALSE(v->WriteSpliced(at, pipe.read_fd(), data.size()).has_value()) << why;
    EXPECT_EQ(pipe.held(), data.size()) << why;
  };
  // Chunks not held yet (a new volume, a clone reading through its snapshot).
  Volume* fresh = NewVolume();
  refused(fresh, 0, "not held");
  std::vector<std::byte> zeros(fresh->size_bytes());
  EXPECT_EQ(ReadAll(fresh), zeros);
  Volume* v = NewVolume();
  const std::vector<std::byte> expected = Fill(v, 24);
  refused(NewVolume(false, 0, Snap(v)), 0, "a clone");
  // Past the end, and an encrypted volume (its bytes need a buffer to be enciphered in).
  refused(v, v->size_bytes() - 4096, "past the end");
  Volume* encrypted = NewVolume(/*encrypted=*/true);
  Fill(encrypted, 25);
  refused(encrypted, 0, "encrypted");
  // A snapshot pending (its copy-before-write needs the synchronous path).
  auto pending = region_->CreateSnapshot({.volume_id = v->id()});
  ASSERT_THAT(pending, IsOk());
  refused(v, 0, "a snapshot pending");
  ASSERT_THAT(region_->RunBackgroundWork(), IsOk());
  EXPECT_EQ(ReadAll(v), expected);
  auto snap = region_->OpenSnapshot(pending->id);
  ASSERT_THAT(snap, IsOk());
  std::vector<std::byte> out(v->size_bytes());
  ASSERT_THAT((*snap)->Read(0, out), IsOk());
  EXPECT_EQ(out, expected);
  // Once it completed, the same write is taken.
  EXPECT_TRUE(v->SplicesWrite(0, data.size()));
  std::optional<absl::Status> written = v->WriteSpliced(0, pipe.read_fd(), data.size());
  ASSERT_TRUE(written.has_value());
  EXPECT_THAT(*written, IsOk());
  EXPECT_EQ(pipe.held(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Rings, VolumeIoTest, ::testing::Values(true, false),
                         [](const auto& info) { return info.param ? "IoUring" : "PreadStandIn"; });

}  // namespace
}  // namespace strata
