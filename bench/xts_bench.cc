// AES-256-XTS per implementation, same run: libgcrypt's against OpenSSL's EVP, on one core, for
// the request sizes NBD sees (4 KiB and 1 MiB, enciphered as 4 KiB units, each with its own
// tweak, in place as the volume's data path does). The ratio is why Xts prefers libgcrypt;
// the bytes per second are the single-core cipher rate the encrypted NBD rows are judged by.
//   build/bin/xts_bench --benchmark_min_time=1 --benchmark_repetitions=3

#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "crypto/xts.h"

namespace strata::crypto {
namespace {

void Encipher(benchmark::State& state, XtsBackend backend, bool decrypt) {
  const size_t request_bytes = static_cast<size_t>(state.range(0));
  auto xts = Xts::Create(RandomSecret(kXtsKeyBytes), backend);
  if (!xts.ok()) {
    state.SkipWithError(std::string(xts.status().message()).c_str());
    return;
  }
  std::vector<std::byte> buffer(request_bytes, std::byte{0x5a});
  uint64_t unit = 0;
  for (auto _ : state) {
    if (decrypt) {
      (*xts)->DecryptUnits(unit, buffer, buffer);
    } else {
      (*xts)->EncryptUnits(unit, buffer, buffer);
    }
    unit += request_bytes / kXtsUnitBytes;
    benchmark::DoNotOptimize(buffer.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * request_bytes));
  state.SetLabel(XtsBackendName(backend));
}

void BM_EncryptGcrypt(benchmark::State& s) { Encipher(s, XtsBackend::kGcrypt, false); }
void BM_EncryptOpenSsl(benchmark::State& s) { Encipher(s, XtsBackend::kOpenSsl, false); }
void BM_DecryptGcrypt(benchmark::State& s) { Encipher(s, XtsBackend::kGcrypt, true); }
void BM_DecryptOpenSsl(benchmark::State& s) { Encipher(s, XtsBackend::kOpenSsl, true); }

BENCHMARK(BM_EncryptGcrypt)->Arg(4096)->Arg(1 << 20);
BENCHMARK(BM_EncryptOpenSsl)->Arg(4096)->Arg(1 << 20);
BENCHMARK(BM_DecryptGcrypt)->Arg(4096)->Arg(1 << 20);
BENCHMARK(BM_DecryptOpenSsl)->Arg(4096)->Arg(1 << 20);

}  // namespace
}  // namespace strata::crypto

BENCHMARK_MAIN();
