// Runs LLVMFuzzerTestOneInput without libFuzzer: each seed as is, then seeded random mutations
// (byte flips, insertions, deletions, splices), bounded in count. Prints the seed.

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
// The target's starting inputs.
std::vector<std::string> FuzzSeeds();

int main(int argc, char** argv) {
  const uint64_t seed = std::getenv("STRATA_TEST_SEED")
                            ? std::strtoull(std::getenv("STRATA_TEST_SEED"), nullptr, 10)
                            : std::random_device{}();
  const long iterations = argc > 1 ? std::atol(argv[1]) : 20000;
  std::printf("seed: STRATA_TEST_SEED=%llu, %ld iterations\n",
              static_cast<unsigned long long>(seed), iterations);
  const std::vector<std::string> seeds = FuzzSeeds();

  std::mt19937_64 rng(seed);
  for (const std::string& s : seeds)
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(s.data()), s.size());
  for (long i = 0; i < iterations; ++i) {
    std::string input = seeds[rng() % seeds.size()];
    const int edits = 1 + static_cast<int>(rng() % 8);
    for (int e = 0; e < edits && !input.empty(); ++e) {
      const size_t pos = rng() % input.size();
      switch (rng() % 4) {
        case 0:
          input[pos] = static_cast<char>(rng());
          break;
        case 1:
          input.insert(pos, 1, "%=&.\r\n:/?*"[rng() % 11]);
          break;
        case 2:
          input.erase(pos, 1 + rng() % 8);
          break;
        default: {
          const std::string& other = seeds[rng() % seeds.size()];
          input += other.substr(rng() % (other.size() + 1));
          break;
        }
      }
    }
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(input.data()), input.size());
  }
  std::printf("1 passed, 0 failed\n");
  return 0;
}
