// Volume I/O against a plain file through the same Env (pread/pwrite), same pattern, same run:
// the ratio is the cost of the volume layer (bitmaps, range locks) on owned chunks; an encrypted
// volume adds AES-256-XTS per 4 KiB unit.
//   build/bin/volume_io_bench --benchmark_counters_tabular=true

#include <benchmark/benchmark.h>
#include <sys/resource.h>
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
  Volume* encrypted = nullptr;
  std::unique_ptr<File> file;
};

// Built once: a prefilled volume (all chunks owned) and a prefilled plain file.
Target& GetTarget() {
  static Target* target = [] {
    auto* t = new Target;
    t->dir = std::make_unique<ScratchDir>("io");
    StoreOptions options;
    options.background_work = false;
    options.kms_root_key = RandomSecret(32);
    t->store = std::move(Store::Open(t->dir->path() + "/store", options).value());
    Region* region = t->store->DefaultRegion();
    const std::string id = region->CreateVolume({.size_bytes = kSpanBytes})->id;
    t->volume = region->GetVolume(id).value();
    const std::string encrypted_id =
        region->CreateVolume({.size_bytes = kSpanBytes, .owner = "111111111111", .encrypted = true})
            ->id;
    t->encrypted = region->GetVolume(encrypted_id).value();
    t->file = std::move(Env::Default()->OpenFile(t->dir->path() + "/plain.raw", true).value());
    const auto data = RandomBytes(1 << 20, 1);
    for (uint64_t off = 0; off < kSpanBytes; off += data.size()) {
      (void)t->volume->Write(off, data);
      (void)t->encrypted->Write(off, data);
      (void)t->file->Write(off, data);
    }
    (void)t->volume->Flush();
    (void)t->encrypted->Flush();
    (void)t->file->Sync();
    return t;
  }();
  return *target;
}

enum Kind { kFile, kVolume, kEncrypted };

// This thread's user and system CPU so far, in microseconds.
std::pair<double, double> ThreadCpuMicros() {
  rusage u{};
  getrusage(RUSAGE_THREAD, &u);
  auto micros = [](const timeval& t) { return t.tv_sec * 1e6 + t.tv_usec; };
  return {micros(u.ru_utime), micros(u.ru_stime)};
}

template <Kind kKind, bool kWrite, bool kRandom>
void BM_Io(benchmark::State& state) {
  Target& t = GetTarget();
  const size_t io_bytes = static_cast<size_t>(state.range(0));
  std::vector<std::byte> buf = RandomBytes(io_bytes, 2);
  std::mt19937_64 rng(3);
  uint64_t next = 0;
  const uint64_t slots = kSpanBytes / io_bytes;
  const auto [user_before, sys_before] = ThreadCpuMicros();
  for (auto _ : state) {
    const uint64_t slot = kRandom ? rng() % slots : (next++ % slots);
    const uint64_t off = slot * io_bytes;
    absl::Status s;
    if constexpr (kKind != kFile) {
      Volume* v = kKind == kVolume ? t.volume : t.encrypted;
      s = kWrite ? v->Write(off, buf) : v->Read(off, std::span(buf));
    } else {
      s = kWrite ? t.file->Write(off, buf) : t.file->Read(off, std::span(buf));
    }
    if (!s.ok()) state.SkipWithError(std::string(s.message()).c_str());
  }
  // User and system CPU per request, apart: encryption works in user space only, so its cost
  // shows in user_us without the page cache's noise in sys_us.
  const auto [user_after, sys_after] = ThreadCpuMicros();
  const double n = static_cast<double>(std::max<int64_t>(1, state.iterations()));
  state.counters["user_us"] = (user_after - user_before) / n;
  state.counters["sys_us"] = (sys_after - sys_before) / n;
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * io_bytes));
}

BENCHMARK(BM_Io<kFile, false, true>)->Name("file/randread")->Arg(4096);
BENCHMARK(BM_Io<kVolume, false, true>)->Name("volume/randread")->Arg(4096);
BENCHMARK(BM_Io<kEncrypted, false, true>)->Name("encrypted/randread")->Arg(4096);
BENCHMARK(BM_Io<kFile, true, true>)->Name("file/randwrite")->Arg(4096);
BENCHMARK(BM_Io<kVolume, true, true>)->Name("volume/randwrite")->Arg(4096);
BENCHMARK(BM_Io<kEncrypted, true, true>)->Name("encrypted/randwrite")->Arg(4096);
BENCHMARK(BM_Io<kFile, false, false>)->Name("file/seqread")->Arg(1 << 20);
BENCHMARK(BM_Io<kVolume, false, false>)->Name("volume/seqread")->Arg(1 << 20);
BENCHMARK(BM_Io<kEncrypted, false, false>)->Name("encrypted/seqread")->Arg(1 << 20);
BENCHMARK(BM_Io<kFile, true, false>)->Name("file/seqwrite")->Arg(1 << 20);
BENCHMARK(BM_Io<kVolume, true, false>)->Name("volume/seqwrite")->Arg(1 << 20);
BENCHMARK(BM_Io<kEncrypted, true, false>)->Name("encrypted/seqwrite")->Arg(1 << 20);

}  // namespace
}  // namespace strata::bench

BENCHMARK_MAIN();
