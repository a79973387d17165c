// CreateSnapshot call latency and ingest time with the same 256 MiB changed in thin volumes of
// 1 GiB, 64 GiB and 1 TiB: ingest must not grow with volume size. Then ListChangedBlocks versus
// changed chunk count and versus volume size, dedup, and memory for 100 open 1 TiB volumes.
//   build/bin/snapshot_bench --benchmark_counters_tabular=true

#include <benchmark/benchmark.h>

#include <chrono>
#include <memory>

#include "bench_util.h"
#include "strata/store.h"

namespace strata::bench {
namespace {

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kGiB = 1ull << 30;

std::unique_ptr<Store> OpenStore(const ScratchDir& dir) {
  StoreOptions options;
  options.background_work = false;
  return std::move(Store::Open(dir.path(), options).value());
}

// Writes `changed_bytes` spread evenly over the volume, 64 KiB at a time.
void WriteSpread(Volume* volume, uint64_t changed_bytes, uint64_t seed) {
  const auto data = RandomBytes(64 * 1024, seed);
  const uint64_t pieces = changed_bytes / data.size();
  const uint64_t stride = volume->size_bytes() / pieces / data.size() * data.size();
  for (uint64_t i = 0; i < pieces; ++i) (void)volume->Write(i * stride, data);
}

void BM_SnapshotIngest(benchmark::State& state) {
  const uint64_t volume_bytes = static_cast<uint64_t>(state.range(0)) * kGiB;
  double call_us = 0, ingest_ms = 0;
  for (auto _ : state) {
    state.PauseTiming();
    ScratchDir dir("snap");
    auto store = OpenStore(dir);
    Region* region = store->DefaultRegion();
    const std::string id = region->CreateVolume({.size_bytes = volume_bytes})->id;
    Volume* volume = region->GetVolume(id).value();
    WriteSpread(volume, 256 * kMiB, 1);
    state.ResumeTiming();
    const auto t0 = std::chrono::steady_clock::now();
    auto snap = region->CreateSnapshot({.volume_id = id});
    const auto t1 = std::chrono::steady_clock::now();
    (void)region->RunBackgroundWork();
    const auto t2 = std::chrono::steady_clock::now();
    if (!snap.ok() || region->DescribeSnapshot(snap->id)->state != SnapshotState::kCompleted) {
      state.SkipWithError("snapshot failed");
    }
    call_us += std::chrono::duration<double, std::micro>(t1 - t0).count();
    ingest_ms += std::chrono::duration<double, std::milli>(t2 - t1).count();
    state.PauseTiming();
    store.reset();
    state.ResumeTiming();
  }
  state.counters["create_call_us"] = call_us / static_cast<double>(state.iterations());
  state.counters["ingest_ms"] = ingest_ms / static_cast<double>(state.iterations());
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * 256 * kMiB));
}
BENCHMARK(BM_SnapshotIngest)
    ->Arg(1)
    ->Arg(64)
    ->Arg(1024)
    ->Iterations(2)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// ListChangedBlocks between two snapshots with `changed` chunks changed in a volume of `size`.
void BM_ListChangedBlocks(benchmark::State& state) {
  const uint64_t changed_chunks = static_cast<uint64_t>(state.range(0));
  const uint64_t volume_bytes = static_cast<uint64_t>(state.range(1)) * kGiB;
  ScratchDir dir("cbt");
  auto store = OpenStore(dir);
  Region* region = store->DefaultRegion();
  const std::string id = region->CreateVolume({.size_bytes = volume_bytes})->id;
  Volume* volume = region->GetVolume(id).value();
  WriteSpread(volume, 64 * kMiB, 1);  // A base of 1024 chunks.
  auto first = region->CreateSnapshot({.volume_id = id});
  (void)region->RunBackgroundWork();
  WriteSpread(volume, changed_chunks * 64 * 1024, 2);
  auto second = region->CreateSnapshot({.volume_id = id});
  (void)region->RunBackgroundWork();
  uint64_t blocks = 0;
  for (auto _ : state) {
    std::string token;
    blocks = 0;
    do {
      auto listing = region->ListChangedBlocks(first->id, second->id, token, 10000);
      if (!listing.ok()) {
        state.SkipWithError(std::string(listing.status().message()).c_str());
        break;
      }
      blocks += listing->blocks.size();
      token = listing->next_token;
    } while (!token.empty());
  }
  state.counters["changed_blocks"] = static_cast<double>(blocks);
}
BENCHMARK(BM_ListChangedBlocks)
    ->Args({16, 64})
    ->Args({256, 64})
    ->Args({4096, 64})  // Versus changed count.
    ->Args({256, 1})
    ->Args({256, 1024})  // Versus volume size.
    ->Unit(benchmark::kMillisecond);

void BM_DedupIdenticalVolumes(benchmark::State& state) {
  for (auto _ : state) {
    ScratchDir dir("dedup");
    auto store = OpenStore(dir);
    Region* region = store->DefaultRegion();
    const auto data = RandomBytes(64 * kMiB, 7);
    uint64_t one = 0;
    for (int v = 0; v < 2; ++v) {
      const std::string id = region->CreateVolume({.size_bytes = 64 * kMiB})->id;
      (void)region->GetVolume(id).value()->Write(0, data);
      (void)region->CreateSnapshot({.volume_id = id});
      (void)region->RunBackgroundWork();
      if (v == 0) one = region->GetStats()->stored_bytes;
    }
    state.counters["stored_bytes_one_volume"] = static_cast<double>(one);
    state.counters["stored_bytes_two_volumes"] =
        static_cast<double>(region->GetStats()->stored_bytes);
  }
}
BENCHMARK(BM_DedupIdenticalVolumes)->Iterations(1)->Unit(benchmark::kMillisecond);

void BM_MemoryHundredThinTebibyteVolumes(benchmark::State& state) {
  for (auto _ : state) {
    ScratchDir dir("mem");
    auto store = OpenStore(dir);
    Region* region = store->DefaultRegion();
    const uint64_t before = ResidentBytes();
    for (int i = 0; i < 100; ++i) {
      const std::string id = region->CreateVolume({.size_bytes = 1024 * kGiB})->id;
      (void)region->GetVolume(id).value()->Write(static_cast<uint64_t>(i) * kGiB,
                                                 RandomBytes(4096, i));
    }
    state.counters["rss_growth_bytes"] = static_cast<double>(ResidentBytes() - before);
    store.reset();
    // Reopened: every volume loaded from the catalog.
    const uint64_t reopen_before = ResidentBytes();
    store = OpenStore(dir);
    state.counters["rss_growth_reopen_bytes"] =
        static_cast<double>(ResidentBytes() - reopen_before);
  }
}
BENCHMARK(BM_MemoryHundredThinTebibyteVolumes)->Iterations(1)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace strata::bench

BENCHMARK_MAIN();
