// Linked into every libFuzzer build of a fuzz target (instead of fuzz_driver.cc): libFuzzer calls
// LLVMFuzzerInitialize first, and with STRATA_FUZZ_SEED_DIR set the target's seeds (FuzzSeeds)
// start the corpus there, beside the corpus kept in tests/fuzz/corpus/.

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

std::vector<std::string> FuzzSeeds();

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  const char* dir = std::getenv("STRATA_FUZZ_SEED_DIR");
  if (dir == nullptr) return 0;
  int n = 0;
  for (const std::string& seed : FuzzSeeds()) {
    std::ofstream(std::filesystem::path(dir) / ("seed-" + std::to_string(n++)), std::ios::binary)
        << seed;
  }
  return 0;
}
