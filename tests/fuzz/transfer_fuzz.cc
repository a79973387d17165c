// Fuzz target for the transfer protocol's parsing (docs/formats/transfer.md): the input is a
// byte stream as a peer would send it, cut into frames by Connection::Receive over a
// socketpair, and every payload is offered to every decoder (and a chunk frame to UnpackChunk).
// Nothing may crash, hang or read out of bounds; decoders either reject with a status or
// return values within the limits they promise.

#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "copy/transfer_messages.h"
#include "copy/transfer_wire.h"

namespace {

using namespace strata;
using namespace strata::copy;

std::string Framed(FrameType type, const std::string& payload) {
  std::string out;
  for (uint32_t v : {kFrameMagic}) out.append(reinterpret_cast<const char*>(&v), 4);
  out.push_back(static_cast<char>(type));
  const uint32_t n = static_cast<uint32_t>(payload.size());
  out.append(reinterpret_cast<const char*>(&n), 4);
  return out + payload;
}

void CheckDecoders(const std::string& p) {
  if (absl::StatusOr<Hello> h = DecodeHello(p); h.ok()) {
    if (h->link.corrupt_rate < 0 || h->link.corrupt_rate > 1) std::abort();
  }
  (void)DecodeOpen(p);
  if (absl::StatusOr<Manifest> m = DecodeManifest(p); m.ok()) {
    const uint64_t chunks = (m->volume_size_bytes + m->chunk_size_bytes - 1) / m->chunk_size_bytes;
    for (const ChunkListing::Chunk& c : m->chunks) {
      if (c.index >= chunks) std::abort();
    }
  }
  if (absl::StatusOr<std::vector<uint64_t>> g = DecodeGet(p); g.ok() && g->size() > 4096) {
    std::abort();
  }
  if (absl::StatusOr<ChunkFrame> c = DecodeChunk(p); c.ok()) {
    absl::StatusOr<std::string> raw = UnpackChunk(*c, 1 << 20);
    if (raw.ok() && raw->size() != c->raw_bytes) std::abort();
  }
  (void)DecodeError(p);
}

}  // namespace

std::vector<std::string> FuzzSeeds() {
  Hello hello{.version = kProtocolVersion, .region = "east-1", .account = "111122223333"};
  Open open{.snapshot_id = "snap-0123456789abcdef0", .base_candidates = {"snap-1", "snap-2"}};
  Manifest manifest{.lineage = "east-1/3", .volume_size_bytes = 1 << 20, .chunk_size_bytes = 65536};
  manifest.chunks = {{0, false}, {3, true}, {15, false}};
  const std::string raw(65536, 'z');
  return {Framed(FrameType::kHello, EncodeHello(hello)) +
              Framed(FrameType::kOpen, EncodeOpen(open)) +
              Framed(FrameType::kGet, EncodeGet({0, 15})),
          Framed(FrameType::kManifest, EncodeManifest(manifest)) +
              Framed(FrameType::kChunk, EncodeChunk(PackChunk(0, raw))) +
              Framed(FrameType::kBatchEnd, ""),
          Framed(FrameType::kError, EncodeError(absl::NotFoundError("gone"))) +
              Framed(FrameType::kDescribeImage, "ami-0123456789abcdef0")};
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) std::abort();
  // The input fits the socket's buffer (the driver's inputs are far smaller than it).
  size_t at = 0;
  while (at < size) {
    const ssize_t n = ::write(pair[0], data + at, size - at);
    if (n <= 0) break;
    at += static_cast<size_t>(n);
  }
  ::close(pair[0]);
  Connection connection(pair[1]);
  for (int frames = 0; frames < 1000; ++frames) {
    absl::StatusOr<strata::copy::Frame> frame = connection.Receive();
    if (!frame.ok()) break;
    CheckDecoders(frame->payload);
  }
  CheckDecoders(std::string(reinterpret_cast<const char*>(data), size));
  return 0;
}
