// Fuzz target for the NBD server: the input is everything a client sends on one connection
// (handshake options, then requests and payloads), played against a Session over a real store
// with one attached 1 MiB volume; the server's replies are checked for framing and dropped.
// Built with clang -fsanitize=fuzzer (scripts/fuzz.sh) it is a libFuzzer target; otherwise
// fuzz_driver.cc runs it on seeded mutations of the seeds below (as a ctest, and under ASan).

#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "protocol.h"
#include "session.h"
#include "strata/export.h"
#include "strata/store.h"

namespace {

using namespace strata;
using namespace strata::nbd;

// The client's bytes in, the server's bytes counted and dropped.
class MemoryTransport final : public Transport {
 public:
  MemoryTransport(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  ssize_t Recv(void* buf, size_t n) override {
    n = std::min(n, size_ - at_);
    std::memcpy(buf, data_ + at_, n);
    at_ += n;
    return static_cast<ssize_t>(n);
  }
  bool Send(std::span<const iovec> pieces) override {
    for (const iovec& p : pieces) sent_ += p.iov_len;
    return true;
  }

 private:
  const uint8_t* data_;
  const size_t size_;
  size_t at_ = 0;
  size_t sent_ = 0;
};

struct Fixture {
  Fixture() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "strata-fuzz-XXXXXX").string();
    dir = ::mkdtemp(tmpl.data());
    StoreOptions options;
    options.background_work = false;
    store = std::move(*Store::Open(dir, options));
    Region* region = store->DefaultRegion();
    volume_id = region->CreateVolume({.size_bytes = 1 << 20})->id;
    if (!region->AttachVolume(volume_id, "i-0123456789abcdef0", "/dev/sdf").ok()) std::abort();
    catalog = NewStoreExportCatalog(*store);
  }
  ~Fixture() {
    catalog.reset();
    store.reset();
    std::filesystem::remove_all(dir);
  }
  std::string dir;
  std::unique_ptr<Store> store;
  std::string volume_id;
  std::unique_ptr<ExportCatalog> catalog;
};

Fixture& TheFixture() {
  static Fixture* fixture = new Fixture();
  return *fixture;
}

void Put(std::string& out, uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) out.push_back(static_cast<char>(v >> (8 * i)));
}
void Option(std::string& out, uint32_t option, const std::string& data) {
  Put(out, kOptionMagic, 8);
  Put(out, option, 4);
  Put(out, data.size(), 4);
  out += data;
}
void Request(std::string& out, bool extended, uint16_t flags, uint16_t type, uint64_t offset,
             uint64_t length) {
  Put(out, extended ? kExtendedRequestMagic : kRequestMagic, 4);
  Put(out, flags, 2);
  Put(out, type, 2);
  Put(out, 0x1234, 8);
  Put(out, offset, 8);
  Put(out, length, extended ? 8 : 4);
}

std::string ClientStream(const std::string& name, bool extended) {
  std::string s;
  Put(s, kFlagFixedNewstyle | kFlagNoZeroes, 4);
  Option(s, extended ? kOptExtendedHeaders : kOptStructuredReply, "");
  std::string meta;
  Put(meta, name.size(), 4);
  meta += name;
  Put(meta, 2, 4);
  Put(meta, 15, 4);
  meta += "base:allocation";
  Put(meta, 14, 4);
  meta += "strata:changed";
  Option(s, kOptSetMetaContext, meta);
  std::string go;
  Put(go, name.size(), 4);
  go += name;
  Put(go, 1, 2);
  Put(go, kInfoBlockSize, 2);
  Option(s, kOptGo, go);
  Request(s, extended, 0, kCmdWrite, 4096, 1024);
  s.append(1024, 'x');
  Request(s, extended, 0, kCmdRead, 0, 8192);
  Request(s, extended, kCmdFlagReqOne, kCmdBlockStatus, 0, 65536);
  Request(s, extended, kCmdFlagFastZero, kCmdWriteZeroes, 8192, 4096);
  Request(s, extended, 0, kCmdResize, 2 << 20, 0);
  Request(s, extended, 0, kCmdFlush, 0, 0);
  Request(s, extended, 0, kCmdDisc, 0, 0);
  return s;
}

}  // namespace

std::vector<std::string> FuzzSeeds() {
  const std::string& name = TheFixture().volume_id;
  std::string listing;
  Put(listing, kFlagFixedNewstyle, 4);
  Option(listing, kOptList, "");
  Option(listing, kOptStartTls, "");
  Option(listing, kOptInfo, std::string("\0\0\0\0\0\0", 6));
  Option(listing, kOptAbort, "");
  return {ClientStream(name, false), ClientStream(name, true), listing};
}

// libFuzzer calls this first: with STRATA_FUZZ_SEED_DIR set, the seeds start the corpus there.
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

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Fixture& f = TheFixture();
  MemoryTransport transport(data, size);
  Session(*f.catalog, /*fd=*/-1, &transport, {}).Run();
  // A volume grown by a RESIZE stays valid for every later input.
  return 0;
}
