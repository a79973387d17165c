// Fuzz target for the NBD server: the input is everything a client sends on one connection
// (handshake options, then requests and payloads), played against a Session over a real store
// with one attached 1 MiB volume. Everything the server sends back must be a well-formed NBD
// server stream (FramingError): the greeting, option replies, and in transmission replies whose
// lengths frame them exactly (whole, with their self-described payloads), or the run aborts.
// Built with clang -fsanitize=fuzzer (scripts/fuzz.sh) it is a libFuzzer target; otherwise
// fuzz_driver.cc runs it on seeded mutations of the seeds below (as a ctest, and under ASan).

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "fuzz_scratch.h"
#include "protocol.h"
#include "session.h"
#include "strata/export.h"
#include "strata/store.h"

namespace {

using namespace strata;
using namespace strata::nbd;

// The client's bytes in; the server's bytes kept (up to kKeptBytes) for FramingError.
class MemoryTransport final : public Transport {
 public:
  static constexpr size_t kKeptBytes = size_t{8} << 20;
  MemoryTransport(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  ssize_t Recv(void* buf, size_t n, RecvWait /*wait*/) override {
    n = std::min(n, size_ - at_);
    std::memcpy(buf, data_ + at_, n);
    at_ += n;
    return static_cast<ssize_t>(n);
  }
  bool Send(std::span<const iovec> pieces) override {
    for (const iovec& p : pieces) {
      const size_t keep = std::min(p.iov_len, kKeptBytes - std::min(kKeptBytes, sent_.size()));
      sent_.append(static_cast<const char*>(p.iov_base), keep);
      truncated_ = truncated_ || keep < p.iov_len;
    }
    return true;
  }
  const std::string& sent() const { return sent_; }
  bool truncated() const { return truncated_; }

 private:
  const uint8_t* data_;
  const size_t size_;
  size_t at_ = 0;
  std::string sent_;
  bool truncated_ = false;
};

// Reads big-endian fields off the server's stream; `short_` once a field runs past its end.
class Cursor {
 public:
  explicit Cursor(const std::string& bytes) : bytes_(bytes) {}
  bool done() const { return at_ == bytes_.size(); }
  bool short_read() const { return short_; }
  uint64_t Get(int width) {
    if (bytes_.size() - at_ < static_cast<size_t>(width)) {
      short_ = true;
      at_ = bytes_.size();
      return 0;
    }
    uint64_t v = 0;
    for (int i = 0; i < width; ++i) v = (v << 8) | static_cast<uint8_t>(bytes_[at_++]);
    return v;
  }
  uint64_t Peek(int width) {
    const size_t at = at_;
    const uint64_t v = Get(width);
    at_ = at;
    short_ = false;
    return v;
  }
  // Skips `n` bytes; false (and short) when fewer remain.
  bool Skip(uint64_t n) {
    if (bytes_.size() - at_ < n) {
      short_ = true;
      at_ = bytes_.size();
      return false;
    }
    at_ += n;
    return true;
  }
  bool AllZero(uint64_t n) {
    if (bytes_.size() - at_ < n) return Skip(n);
    for (uint64_t i = 0; i < n; ++i)
      if (bytes_[at_ + i] != 0) return false;
    at_ += n;
    return true;
  }

 private:
  const std::string& bytes_;
  size_t at_ = 0;
  bool short_ = false;
};

// Why `server` is not a well-formed NBD server stream for a client whose first four bytes
// (its flags) are `client_flags`, or "" when it is. Transmission replies are framed exactly
// once structured replies or extended headers are on (every reply says its length); with
// simple replies a READ's data length is the request's, so only the first reply is checked.
// A stream cut short by MemoryTransport's cap may end anywhere.
std::string FramingError(const std::string& server, uint32_t client_flags, bool truncated) {
  Cursor c(server);
  auto cut = [&](const char* what) -> std::string {
    return c.short_read() && !truncated ? std::string(what) + ": cut short" : "";
  };
  if (c.Get(8) != kNbdMagic || c.Get(8) != kOptionMagic) return cut("greeting") + " bad magic";
  if ((c.Get(2) & ~uint64_t{kFlagFixedNewstyle | kFlagNoZeroes}) != 0) return "greeting flags";
  bool structured = false, extended = false, transmission = false;
  while (!c.done() && !transmission) {
    if (c.Peek(8) == kOptionReplyMagic) {
      c.Get(8);
      const uint64_t option = c.Get(4), type = c.Get(4), length = c.Get(4);
      if (c.short_read()) return cut("option reply header");
      const bool error = (type & 0x80000000u) != 0;
      if (error ? (type < kRepErrUnsup || type > kRepErrShutdown + 3)
                : (type < kRepAck || type > kRepMetaContext)) {
        return "option reply type " + std::to_string(type);
      }
      if (type == kRepAck && length != 0) return "ACK with a payload";
      if ((type == kRepInfo && length < 2) || (type == kRepServer && length < 4) ||
          (type == kRepMetaContext && length < 4)) {
        return "option reply " + std::to_string(type) + " too short";
      }
      if (!c.Skip(length)) return cut("option reply payload");
      if (type == kRepAck && option == kOptStructuredReply) structured = true;
      if (type == kRepAck && option == kOptExtendedHeaders) extended = true;
      if (type == kRepAck && option == kOptGo) transmission = true;
      continue;
    }
    // NBD_OPT_EXPORT_NAME's reply: size, transmission flags, and 124 zeros unless NO_ZEROES.
    c.Get(8);
    c.Get(2);
    if (!c.AllZero((client_flags & kFlagNoZeroes) != 0 ? 0 : 124)) {
      return c.short_read() ? cut("export name reply") : "export name reply padding";
    }
    if (c.short_read()) return cut("export name reply");
    transmission = true;
  }
  if (!transmission || c.done()) return "";
  if (!structured && !extended) {
    return c.Get(4) == kSimpleReplyMagic || c.short_read() ? cut("simple reply")
                                                           : "first reply's magic";
  }
  while (!c.done()) {
    const uint64_t magic = c.Get(4);
    if (magic == kSimpleReplyMagic && !extended) {
      c.Get(4);
      c.Get(8);
      if (c.short_read()) return cut("simple reply");
      continue;
    }
    if (magic != (extended ? kExtendedReplyMagic : kStructuredReplyMagic)) {
      return c.short_read() ? cut("reply magic") : "reply magic " + std::to_string(magic);
    }
    const uint64_t flags = c.Get(2), type = c.Get(2);
    c.Get(8);                // Cookie.
    if (extended) c.Get(8);  // Offset.
    const uint64_t length = c.Get(extended ? 8 : 4);
    if (c.short_read()) return cut("reply header");
    if ((flags & ~uint64_t{kReplyFlagDone}) != 0) return "reply flags";
    const uint64_t status_type = extended ? kReplyTypeBlockStatusExt : kReplyTypeBlockStatus;
    const bool fits = type == kReplyTypeNone         ? length == 0
                      : type == kReplyTypeOffsetData ? length >= 8
                      : type == status_type     ? (extended ? length >= 8 && (length - 8) % 16 == 0
                                                            : length >= 4 && (length - 4) % 8 == 0)
                      : type == kReplyTypeError ? length >= 6
                                                : false;
    if (!fits)
      return "reply type " + std::to_string(type) + " of " + std::to_string(length) + " bytes";
    if (type == kReplyTypeError) {
      c.Get(4);
      const uint64_t message = c.Get(2);
      if (c.short_read()) return cut("error reply");
      if (6 + message != length) return "error reply's message length";
      if (!c.Skip(message)) return cut("error message");
      continue;
    }
    if (!c.Skip(length)) return cut("reply payload");
  }
  return "";
}

struct Fixture {
  Fixture() {
    dir = FuzzScratchDir("strata-fuzz");
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

// Never destroyed (libFuzzer exits from anywhere, with sessions' threads perhaps still running),
// but its directory goes at exit, so runs leave nothing in the temp directory.
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

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Fixture& f = TheFixture();
  MemoryTransport transport(data, size);
  Session(*f.catalog, /*fd=*/-1, &transport, {}).Run();
  uint32_t client_flags = 0;
  for (size_t i = 0; i < 4 && i < size; ++i) client_flags = (client_flags << 8) | data[i];
  if (const std::string why = FramingError(transport.sent(), client_flags, transport.truncated());
      !why.empty()) {
    std::fprintf(stderr, "NBD server stream not well framed: %s\n", why.c_str());
    std::abort();
  }
  // A volume grown by a RESIZE stays valid for every later input.
  return 0;
}
