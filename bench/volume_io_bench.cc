// Volume I/O against a plain file through the same Env (pread/pwrite), same pattern, same run:
// the ratio is the cost of the volume layer (bitmaps, range locks) on owned chunks.
//   build/bin/volume_io_bench --benchmark_counters_tabular=true

#include <benchmark/benchmark.h>
#include <unistd.h>

#include <memory>
#include <random>

#include "bench_util.h"
#include "strata/store.h"

namespace strata::bench {
namespace {

constexpr uint64_t kSpanBytes = 1ull << 30;  // 1 GiB working set.

struct Target {
  std::unique_ptr<ScratchDir> dir;
  std::unique_ptr<Store> store;
  Volume* volume = nullptr;
  std::unique_ptr<File> file;
};

// Built once: a prefilled volume (all chunks owned) and a prefilled plain file.
Target& GetTarget() {
  static Target* target = [] {
    auto* t = new Target;
    t->dir = std::make_unique<ScratchDir>("io");
    StoreOptions options;
    options.background_work = false;
    t->store = std::move(Store::Open(t->dir->path() + "/store", options).value());
    Region* region = t->store->DefaultRegion();
    const std::string id = region->CreateVolume({.size_bytes = kSpanBytes})->id;
    t->volume = region->GetVolume(id).value();
    t->file = std::move(Env::Default()->OpenFile(t->dir->path() + "/plain.raw", true).value());
    const auto data = RandomBytes(1 << 20, 1);
    for (uint64_t off = 0; off < kSpanBytes; off += data.size()) {
      (void)t->volume->Write(off, data);
      (void)t->file->Write(off, data);
    }
    (void)t->volume->Flush();
    (void)t->file->Sync();
    return t;
  }();
  return *target;
}

template <bool kVolume, bool kWrite, bool kRandom>
void BM_Io(benchmark::State& state) {
  Target& t = GetTarget();
  const size_t io_bytes = static_cast<size_t>(state.range(0));
  std::vector<std::byte> buf = RandomBytes(io_bytes, 2);
  std::mt19937_64 rng(3);
  uint64_t next = 0;
  const uint64_t slots = kSpanBytes / io_bytes;
  for (auto _ : state) {
    const uint64_t slot = kRandom ? rng() % slots : (next++ % slots);
    const uint64_t off = slot * io_bytes;
    absl::Status s;
    if constexpr (kVolume) {
      s = kWrite ? t.volume->Write(off, buf) : t.volume->Read(off, std::span(buf));
    } else {
      s = kWrite ? t.file->Write(off, buf) : t.file->Read(off, std::span(buf));
    }
    if (!s.ok()) state.SkipWithError(std::string(s.message()).c_str());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * io_bytes));
}

BENCHMARK(BM_Io<false, false, true>)->Name("file/randread")->Arg(4096);
BENCHMARK(BM_Io<true, false, true>)->Name("volume/randread")->Arg(4096);
BENCHMARK(BM_Io<false, true, true>)->Name("file/randwrite")->Arg(4096);
BENCHMARK(BM_Io<true, true, true>)->Name("volume/randwrite")->Arg(4096);
BENCHMARK(BM_Io<false, false, false>)->Name("file/seqread")->Arg(1 << 20);
BENCHMARK(BM_Io<true, false, false>)->Name("volume/seqread")->Arg(1 << 20);
BENCHMARK(BM_Io<false, true, false>)->Name("file/seqwrite")->Arg(1 << 20);
BENCHMARK(BM_Io<true, true, false>)->Name("volume/seqwrite")->Arg(1 << 20);

}  // namespace
}  // namespace strata::bench

BENCHMARK_MAIN();
