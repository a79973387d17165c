// Faults at every Env call site, enumerated rather than sampled. A fixed workload touches every
// kind of state the store keeps (a plain and an encrypted volume, writes, FUA, trims, flushes,
// snapshots, a volume restored from one and hydrated, an in-region copy, an image and an
// instance of it, a resize, a deletion with garbage collection, an EBS direct snapshot). It runs
// once to count its Env calls (the catalog's included: meta/env_file_system.h); then, for every
// call n and every kind of fault, it runs again on a fresh store with the fault at call n, the
// machine loses power, and the store reopens. Each run checks that every failure was a clear error
// naming the fault and that the store is consistent: it opens, fsck is clean after GC, every write
// answered before a FLUSH that succeeded is there, and every snapshot that had completed restores
// byte for byte.

#include <cerrno>
#include <cstdio>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "strata/fault_injection_env.h"
#include "strata/fault_injection_ring.h"
#include "strata/fsck.h"
#include "strata/image.h"
#include "strata/secret.h"
#include "strata/store.h"
#include "test_backend.h"
#include "test_util.h"
#include "workload.h"

namespace strata::crash {
namespace {

using ::strata::testing::IsOk;

constexpr uint64_t kVolumeBytes = 1 << 20;
constexpr uint64_t kSectors = kVolumeBytes / kSector;

// What each sector of a volume may hold, given the writes that were answered (with success or
// with an error) and the flushes that succeeded.
class SectorModel {
 public:
  explicit SectorModel(uint64_t sectors) : sectors_(sectors) {}
  // A write (or trim: value 0) of sectors [first, first + count) that returned `ok`.
  void Write(uint64_t first, uint64_t count, uint64_t value, bool ok, bool fua) {
    for (uint64_t s = first; s < first + count; ++s) {
      Sector& sector = sectors_[s];
      sector.since.insert(value);
      if (ok) {
        sector.current = {value};
        if (fua) sector.durable.insert(value);
      } else {
        sector.current.insert(value);  // May have landed, in part.
      }
    }
  }
  void Flushed() {
    for (Sector& sector : sectors_) {
      sector.durable = sector.current;
      sector.since.clear();
    }
  }
  void Grow(uint64_t sectors) { sectors_.resize(sectors); }
  // What a point-in-time image taken now holds: the current values.
  std::vector<std::set<uint64_t>> Image() const {
    std::vector<std::set<uint64_t>> image;
    for (const Sector& sector : sectors_) image.push_back(sector.current);
    return image;
  }
  // A volume restored from an image starts with it, durably (its base is the snapshot).
  static SectorModel From(const std::vector<std::set<uint64_t>>& image) {
    SectorModel model(image.size());
    for (size_t s = 0; s < image.size(); ++s) {
      model.sectors_[s].durable = model.sectors_[s].current = image[s];
    }
    return model;
  }
  // What may be there after a power loss.
  bool Allowed(uint64_t sector, uint64_t value) const {
    const Sector& s = sectors_[sector];
    return s.durable.contains(value) || s.since.contains(value);
  }
  uint64_t sectors() const { return sectors_.size(); }

 private:
  struct Sector {
    std::set<uint64_t> durable = {0};
    std::set<uint64_t> current = {0};
    std::set<uint64_t> since;
  };
  std::vector<Sector> sectors_;
};

// Instances' VMs, as the workload needs them: started and stopped at once, no I/O.
class NullHypervisor final : public Hypervisor {
 public:
  std::string name() const override { return "null"; }
  absl::Status Start(const Machine& machine, ExitFn on_exit) override {
    absl::MutexLock lock(&mu_);
    running_[machine.instance_id] = std::move(on_exit);
    return absl::OkStatus();
  }
  absl::Status Stop(const std::string& id, bool) override {
    ExitFn exit;
    {
      absl::MutexLock lock(&mu_);
      auto it = running_.find(id);
      if (it == running_.end()) return absl::OkStatus();
      exit = std::move(it->second);
      running_.erase(it);
    }
    exit(id, true, "stopped");
    return absl::OkStatus();
  }
  absl::StatusOr<std::string> Console(const std::string&) override { return ""; }

 private:
  absl::Mutex mu_;
  std::map<std::string, ExitFn> running_ ABSL_GUARDED_BY(mu_);
};

struct Expectations {
  std::map<std::string, SectorModel> volumes;  // Volumes whose creation was answered with OK.
  std::map<std::string, std::vector<std::set<uint64_t>>> snapshots;  // Images at creation.
  std::set<std::string> deleted_snapshots;
  std::vector<std::string> errors;  // Every error the workload saw, for the clarity check.
};

class FaultEnumerationTest : public ::testing::Test {
 protected:
  absl::Status Open() {
    StoreOptions options = ::strata::testing::TestStoreOptions(dir_.path());
    options.ceph.reset();  // The Env's faults reach the local backend only.
    options.env = &*env_;
    options.background_work = false;
    options.chunk_size_bytes = 16 * 1024;
    options.manifest_piece_entries = 8;
    options.kms_root_key = root_key_;
    options.hypervisor = &hypervisor_;
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(dir_.path(), options);
    if (!store.ok()) return store.status();
    store_ = std::move(*store);
    region_ = store_->DefaultRegion();
    return absl::OkStatus();
  }

  // Runs the workload, recording what must survive in `expect`. Errors are recorded, not fatal:
  // after one, the workload goes on (a transient fault) or every later call fails too.
  void RunWorkload(Expectations& expect) {
    auto note = [&](const absl::Status& s) {
      if (!s.ok()) expect.errors.push_back(s.ToString());
      return s.ok();
    };
    if (!note(Open())) return;
    uint64_t next_value = 1;
    auto write = [&](const std::string& id, uint64_t offset, uint64_t length, bool fua) {
      if (!expect.volumes.contains(id)) return;
      absl::StatusOr<Volume*> volume = region_->GetVolume(id);
      if (!note(volume.status())) return;
      const uint64_t value = next_value++;
      std::vector<std::byte> data(length);
      FillValue(data, value, offset / kSector);
      const bool ok = note((*volume)->Write(offset, data, fua));
      expect.volumes.at(id).Write(offset / kSector, length / kSector, value, ok, fua);
    };
    auto trim = [&](const std::string& id, uint64_t offset, uint64_t length) {
      if (!expect.volumes.contains(id)) return;
      absl::StatusOr<Volume*> volume = region_->GetVolume(id);
      if (!note(volume.status())) return;
      const bool ok = note((*volume)->Trim(offset, length));
      expect.volumes.at(id).Write(offset / kSector, length / kSector, 0, ok, false);
    };
    auto flush = [&](const std::string& id) {
      if (!expect.volumes.contains(id)) return;
      absl::StatusOr<Volume*> volume = region_->GetVolume(id);
      if (note(volume.status()) && note((*volume)->Flush())) expect.volumes.at(id).Flushed();
    };
    auto create = [&](const CreateVolumeRequest& request,
                      std::optional<SectorModel> model) -> std::string {
      absl::StatusOr<VolumeInfo> info = region_->CreateVolume(request);
      if (!note(info.status())) return "";
      expect.volumes.emplace(info->id, model.value_or(SectorModel(request.size_bytes / kSector)));
      return info->id;
    };
    auto snapshot = [&](const std::string& id) -> std::string {
      if (!expect.volumes.contains(id)) return "";
      absl::StatusOr<SnapshotInfo> info = region_->CreateSnapshot({.volume_id = id});
      if (!note(info.status())) return "";
      expect.snapshots.emplace(info->id, expect.volumes.at(id).Image());
      note(region_->RunBackgroundWork());
      // An ingest's failure shows in the snapshot's state, not in RunBackgroundWork's result.
      absl::StatusOr<SnapshotInfo> after = region_->DescribeSnapshot(info->id);
      if (note(after.status()) && after->state == SnapshotState::kError) {
        note(absl::DataLossError(after->state_message));
      }
      return info->id;
    };

    const std::string v1 = create({.size_bytes = kVolumeBytes}, std::nullopt);
    write(v1, 0, 64 << 10, false);
    flush(v1);
    write(v1, 64 << 10, 64 << 10, /*fua=*/true);
    const std::string s1 = snapshot(v1);
    write(v1, 32 << 10, 64 << 10, false);
    trim(v1, 256 << 10, 4 << 10);
    const std::string v2 = create({.size_bytes = kVolumeBytes, .encrypted = true}, std::nullopt);
    write(v2, 0, 64 << 10, false);
    flush(v2);
    const std::string s2 = snapshot(v2);
    std::string v3;
    if (expect.snapshots.contains(s1)) {
      v3 = create({.snapshot_id = s1}, SectorModel::From(expect.snapshots.at(s1)));
      if (!v3.empty()) {
        note(region_->StartHydration(v3, 0));
        note(region_->RunBackgroundWork());
      }
      write(v3, 128 << 10, 8 << 10, false);
      flush(v3);
      absl::StatusOr<SnapshotInfo> copy = region_->CopySnapshot(s1, {});
      if (note(copy.status())) expect.snapshots.emplace(copy->id, expect.snapshots.at(s1));
      note(region_->RunBackgroundWork());
    }
    if (expect.snapshots.contains(s2)) {
      ImageInfo image;
      image.name = "enumerated";
      image.root_device_name = "/dev/sda1";
      BlockDeviceMapping root;
      root.device_name = "/dev/sda1";
      root.ebs = EbsBlockDevice{.snapshot_id = s2};
      image.mappings.push_back(root);
      absl::StatusOr<ImageInfo> registered = region_->images().RegisterImage(image);
      // An instance of it: its root volume made from the image's snapshot and attached, then
      // terminated (the volume deleted with it).
      if (note(registered.status())) {
        absl::StatusOr<InstanceInfo> instance =
            region_->images().RunInstance({.image_id = registered->id});
        if (note(instance.status())) {
          note(region_->images().TerminateInstance(instance->id).status());
        }
      }
    }
    if (expect.volumes.contains(v1)) {
      absl::StatusOr<VolumeInfo> grown =
          region_->ModifyVolume(v1, {.size_bytes = 2 * kVolumeBytes, .volume_type = "gp3"});
      if (note(grown.status())) expect.volumes.at(v1).Grow(2 * kVolumeBytes / kSector);
      if (grown.ok()) write(v1, kVolumeBytes + (512 << 10), 64 << 10, false);
      flush(v1);
    }
    if (expect.snapshots.contains(s1) && note(region_->DeleteSnapshot(s1))) {
      expect.snapshots.erase(s1);
      expect.deleted_snapshots.insert(s1);
    }
    note(region_->CollectGarbage().status());
    absl::StatusOr<Region::DirectSnapshot> direct =
        region_->StartDirectSnapshot(kVolumeBytes, "", {});
    if (note(direct.status())) {
      SectorModel model(kSectors);
      absl::StatusOr<Volume*> builder = region_->GetVolume(direct->builder_volume_id);
      if (note(builder.status())) {
        const uint64_t value = next_value++;
        std::vector<std::byte> data(32 << 10);
        FillValue(data, value, 0);
        const bool ok = note((*builder)->Write(0, data));
        model.Write(0, data.size() / kSector, value, ok, false);
        if (ok && note(region_->CompleteDirectSnapshot(direct->snapshot.id))) {
          expect.snapshots.emplace(direct->snapshot.id, model.Image());
        }
        note(region_->RunBackgroundWork());
      }
    }
    if (!v3.empty() && note(region_->DeleteVolume(v3))) expect.volumes.erase(v3);
    flush(v1);
    flush(v2);
  }

  // Power loss, then the checks. `completed` are the snapshots the store called completed
  // before it.
  void CrashAndCheck(const Expectations& expect, const std::set<std::string>& completed) {
    ASSERT_THAT(env_->Crash(), IsOk());
    env_->FailAfter(0, absl::DataLossError("injected: the machine is off"));
    store_.reset();
    env_->ClearFaults();
    ASSERT_THAT(Open(), IsOk()) << "the store does not open after the power loss";
    for (const auto& [id, model] : expect.volumes) {
      absl::StatusOr<Volume*> volume = region_->GetVolume(id);
      ASSERT_THAT(volume, IsOk()) << "volume " << id << " was created and is gone";
      std::vector<std::byte> data(model.sectors() * kSector);
      ASSERT_THAT((*volume)->Read(0, data), IsOk());
      for (uint64_t s = 0; s < model.sectors(); ++s) {
        const uint64_t v = SectorValue(std::span(data).subspan(s * kSector, kSector), s);
        ASSERT_TRUE(model.Allowed(s, v)) << "volume " << id << " sector " << s << " holds " << v;
      }
    }
    for (const std::string& id : completed) {
      absl::StatusOr<SnapshotInfo> info = region_->DescribeSnapshot(id);
      ASSERT_THAT(info, IsOk()) << "completed snapshot " << id << " is gone";
      ASSERT_EQ(info->state, SnapshotState::kCompleted) << id << ": " << info->state_message;
      const std::vector<std::set<uint64_t>>& image = expect.snapshots.at(id);
      absl::StatusOr<std::unique_ptr<Snapshot>> snap = region_->OpenSnapshot(id);
      ASSERT_THAT(snap, IsOk());
      std::vector<std::byte> data(image.size() * kSector);
      ASSERT_THAT((*snap)->Read(0, data), IsOk());
      for (uint64_t s = 0; s < image.size(); ++s) {
        const uint64_t v = SectorValue(std::span(data).subspan(s * kSector, kSector), s);
        ASSERT_TRUE(image[s].contains(v)) << "snapshot " << id << " sector " << s << " holds " << v;
      }
    }
    for (const std::string& id : expect.deleted_snapshots) {
      EXPECT_FALSE(region_->DescribeSnapshot(id).ok()) << "deleted snapshot " << id << " is back";
    }
    ASSERT_THAT(region_->CollectGarbage(), IsOk());
    store_.reset();
    absl::StatusOr<FsckReport> report = CheckStore(dir_.path(), &*env_, std::nullopt);
    ASSERT_THAT(report, IsOk());
    for (const std::string& finding : report->findings) ADD_FAILURE() << finding;
  }

  std::set<std::string> Completed(const Expectations& expect) {
    std::set<std::string> completed;
    if (region_ == nullptr) return completed;
    for (const auto& [id, image] : expect.snapshots) {
      absl::StatusOr<SnapshotInfo> info = region_->DescribeSnapshot(id);
      if (info.ok() && info->state == SnapshotState::kCompleted) completed.insert(id);
    }
    return completed;
  }

  void Reset() {
    store_.reset();
    region_ = nullptr;
    env_.reset();
    mem_ = NewMemEnv();
    env_.emplace(mem_.get());
  }

  ::strata::testing::TempDir dir_;
  SecretBytes root_key_ = RandomSecret(32);
  NullHypervisor hypervisor_;
  std::unique_ptr<Env> mem_ = NewMemEnv();
  std::optional<FaultInjectionEnv> env_{std::in_place, mem_.get()};
  std::unique_ptr<Store> store_;
  Region* region_ = nullptr;
};

struct FaultKind {
  const char* name;
  Fault fault;
};

TEST_F(FaultEnumerationTest, EveryCallSiteFailsCleanlyAndLosesNothingDurable) {
  // The workload without faults: it must run clean, and it tells how many calls to enumerate.
  Expectations clean;
  RunWorkload(clean);
  for (const std::string& error : clean.errors) ADD_FAILURE() << "without a fault: " << error;
  const int64_t calls = env_->operations();
  ASSERT_GT(calls, 100);
  ASSERT_EQ(Completed(clean).size(), clean.snapshots.size());
  CrashAndCheck(clean, Completed(clean));
  std::printf("the workload makes %lld Env calls\n", static_cast<long long>(calls));

  const std::vector<FaultKind> kinds = {
      {"EIO, then the disk is dead", {.status = absl::DataLossError("injected EIO")}},
      {"EIO once (a failed fsync loses its pages)",
       {.status = absl::DataLossError("injected EIO"), .transient = true}},
      {"ENOSPC once, after a short write",
       {.status = absl::ResourceExhaustedError("injected ENOSPC"),
        .transient = true,
        .short_write = true}},
  };
  int rounds = 0;
  for (const FaultKind& kind : kinds) {
    for (int64_t n = 0; n < calls; ++n) {
      SCOPED_TRACE(::testing::Message() << kind.name << " at call " << n << " of " << calls);
      Reset();
      env_->InjectAt(n, kind.fault);
      Expectations expect;
      RunWorkload(expect);
      // The first error names the fault; later ones may be its consequences (a snapshot that
      // failed cannot be copied), each with its own reason.
      if (!expect.errors.empty()) {
        EXPECT_TRUE(expect.errors.front().find("injected") != std::string::npos)
            << "an error that does not say what failed: " << expect.errors.front();
      }
      SCOPED_TRACE(::testing::Message()
                   << "errors the workload saw: " << absl::StrJoin(expect.errors, " | "));
      const std::set<std::string> completed = Completed(expect);
      env_->ClearFaults();
      CrashAndCheck(expect, completed);
      ++rounds;
      if (HasFatalFailure() || HasFailure()) return;
    }
  }
  std::printf("%d enumerated fault rounds\n", rounds);
  ::strata::testing::RecordCrashRounds("fault-enumeration", rounds);
}

// The asynchronous data path (Volume::SubmitRead / SubmitWrite through an IoRing, as the NBD
// server drives it) with a fault at each queued read or write in turn: EIO, ENOSPC, or a short
// transfer. A failed request is answered with a clear error and the others are not; a short one
// is finished by the volume and succeeds. After the faults every answered write reads back (on
// a plain and an encrypted volume), and a FLUSH makes it durable.
class RingFaultTest : public ::testing::Test {
 protected:
  struct Request final : VolumeIo {
    void Done(absl::Status s) override {
      status = std::move(s);
      done = true;
    }
    absl::Status status;
    bool done = false;
  };

  void SetUp() override {
    StoreOptions options = ::strata::testing::TestStoreOptions(dir_.path());
    options.ceph.reset();  // Head files with descriptors: the ring's path.
    options.background_work = false;
    options.kms_root_key = root_key_;
    auto store = Store::Open(dir_.path(), options);
    ASSERT_THAT(store, IsOk());
    store_ = std::move(*store);
    region_ = store_->DefaultRegion();
    auto ring = IoRing::Create(64);
    ASSERT_THAT(ring, IsOk());
    ring_.emplace(std::move(*ring));
  }

  // Writes then reads a burst through the ring on each volume; returns the failures seen.
  // `maybe` holds what each sector may read as, updated with each answered write.
  std::vector<std::string> Burst(const std::vector<Volume*>& volumes, uint64_t value,
                                 std::map<Volume*, std::vector<std::set<uint64_t>>>& maybe) {
    constexpr uint64_t kOffsets[] = {0, 64 << 10, 192 << 10, 512 << 10};
    constexpr uint64_t kLengths[] = {4 << 10, 128 << 10, 16 << 10, 256 << 10};
    std::vector<std::string> failures;
    std::vector<std::unique_ptr<Request>> writes;
    std::vector<std::vector<std::byte>> buffers;
    for (Volume* v : volumes) {
      for (size_t i = 0; i < std::size(kOffsets); ++i) {
        buffers.emplace_back(kLengths[i]);
        FillValue(buffers.back(), value, kOffsets[i] / kSector);
        writes.push_back(std::make_unique<Request>());
        v->SubmitWrite(kOffsets[i], buffers.back(), false, *ring_, *writes.back());
      }
    }
    EXPECT_THAT(ring_->Wait(), IsOk());
    size_t k = 0;
    for (Volume* v : volumes) {
      for (size_t i = 0; i < std::size(kOffsets); ++i, ++k) {
        EXPECT_TRUE(writes[k]->done);
        if (writes[k]->status.ok()) {
          for (uint64_t s = 0; s < kLengths[i] / kSector; ++s) {
            maybe[v][kOffsets[i] / kSector + s] = {value};
          }
        } else {
          failures.push_back(writes[k]->status.ToString());
          for (uint64_t s = 0; s < kLengths[i] / kSector; ++s) {
            maybe[v][kOffsets[i] / kSector + s].insert(value);
          }
        }
      }
    }
    std::vector<std::unique_ptr<Request>> reads;
    std::vector<std::vector<std::byte>> out;
    for (Volume* v : volumes) {
      for (size_t i = 0; i < std::size(kOffsets); ++i) {
        out.emplace_back(kLengths[i]);
        reads.push_back(std::make_unique<Request>());
        v->SubmitRead(kOffsets[i], out.back(), *ring_, *reads.back());
      }
    }
    EXPECT_THAT(ring_->Wait(), IsOk());
    k = 0;
    for (Volume* v : volumes) {
      for (size_t i = 0; i < std::size(kOffsets); ++i, ++k) {
        EXPECT_TRUE(reads[k]->done);
        if (!reads[k]->status.ok()) {
          failures.push_back(reads[k]->status.ToString());
          continue;
        }
        for (uint64_t s = 0; s < kLengths[i] / kSector; ++s) {
          const uint64_t sector = kOffsets[i] / kSector + s;
          const uint64_t got = SectorValue(std::span(out[k]).subspan(s * kSector, kSector), sector);
          EXPECT_TRUE(maybe[v][sector].contains(got))
              << "volume " << v->id() << " sector " << sector << " reads " << got;
        }
      }
    }
    return failures;
  }

  ::strata::testing::TempDir dir_;
  SecretBytes root_key_ = RandomSecret(32);
  std::unique_ptr<Store> store_;
  Region* region_ = nullptr;
  std::optional<FaultInjectionRing> ring_;
};

TEST_F(RingFaultTest, EveryQueuedReadAndWriteFailsCleanlyAndTheRestLand) {
  std::vector<Volume*> volumes;
  std::map<Volume*, std::vector<std::set<uint64_t>>> maybe;
  for (bool encrypted : {false, true}) {
    auto info = region_->CreateVolume({.size_bytes = kVolumeBytes, .encrypted = encrypted});
    ASSERT_THAT(info, IsOk());
    Volume* v = *region_->GetVolume(info->id);
    // Written whole first, so that the volume holds every chunk and the burst is queued.
    std::vector<std::byte> whole(kVolumeBytes);
    FillValue(whole, 1, 0);
    ASSERT_THAT(v->Write(0, whole), IsOk());
    maybe[v].assign(kSectors, {1});
    volumes.push_back(v);
  }
  // Without faults: the burst is queued (the path under test), and tells how many to enumerate.
  EXPECT_TRUE(Burst(volumes, 2, maybe).empty());
  const int64_t operations = ring_->operations();
  ASSERT_GE(operations, 8) << "the burst did not go through the ring";
  std::printf("a burst queues %lld reads and writes (io_uring: %s)\n",
              static_cast<long long>(operations), ring_->uses_io_uring() ? "yes" : "no");
  uint64_t value = 3;
  for (const RingFault fault : {RingFault{.error = EIO}, RingFault{.error = ENOSPC}, RingFault{}}) {
    for (int64_t n = 0; n < operations; ++n, ++value) {
      SCOPED_TRACE(::testing::Message() << "fault " << fault.error << " at operation " << n);
      ring_->InjectAt(n, fault);
      const std::vector<std::string> failures = Burst(volumes, value, maybe);
      if (fault.error == 0) {
        EXPECT_TRUE(failures.empty()) << "a short transfer failed: " << failures.front();
      } else {
        ASSERT_EQ(failures.size(), 1u) << "one fault, one failed request";
        EXPECT_THAT(failures.front(),
                    ::testing::HasSubstr(fault.error == EIO ? "Input/output error"
                                                            : "No space left on device"));
      }
      // Whatever failed, the volumes keep answering: a FLUSH covers every answered write.
      for (Volume* v : volumes) ASSERT_THAT(v->Flush(), IsOk());
      if (HasFailure()) return;
    }
  }
  // What was answered is what the volumes hold, through a reopen.
  std::map<std::string, std::vector<std::set<uint64_t>>> by_id;
  for (Volume* v : volumes) by_id[v->id()] = maybe[v];
  store_.reset();
  StoreOptions options = ::strata::testing::TestStoreOptions(dir_.path());
  options.ceph.reset();
  options.background_work = false;
  options.kms_root_key = root_key_;
  auto store = Store::Open(dir_.path(), options);
  ASSERT_THAT(store, IsOk());
  for (const auto& [id, sectors] : by_id) {
    std::vector<std::byte> data(kVolumeBytes);
    ASSERT_THAT((*(*store)->DefaultRegion()->GetVolume(id))->Read(0, data), IsOk());
    for (uint64_t s = 0; s < kSectors; ++s) {
      const uint64_t got = SectorValue(std::span(data).subspan(s * kSector, kSector), s);
      ASSERT_TRUE(sectors[s].contains(got)) << id << " sector " << s << " reads " << got;
    }
  }
}

}  // namespace
}  // namespace strata::crash
