#include "request.h"

#include <cstring>

namespace strata::nbd {
namespace {

uint64_t Get(std::span<const std::byte> p, size_t offset, size_t bytes) {
  uint64_t v = 0;
  for (size_t i = 0; i < bytes; ++i) v = (v << 8) | static_cast<uint8_t>(p[offset + i]);
  return v;
}

}  // namespace

std::variant<Request, RequestError> DecodeRequest(
    std::span<const std::byte, kRequestHeaderBytes> header) {
  if (Get(header, 0, 4) != kRequestMagic) return RequestError{kEinval, /*fatal=*/true};
  Request r;
  r.flags = static_cast<uint16_t>(Get(header, 4, 2));
  r.type = static_cast<uint16_t>(Get(header, 6, 2));
  r.cookie = Get(header, 8, 8);
  r.offset = Get(header, 16, 8);
  r.length = static_cast<uint32_t>(Get(header, 24, 4));
  return r;
}

std::variant<Request, RequestError> ValidateRequest(const Request& r, const ExportInfo& info) {
  switch (r.type) {
    case kCmdDisc:
    case kCmdFlush:
      if (r.offset != 0 || r.length != 0 || (r.flags & ~kCmdFlagFua) != 0)
        return RequestError{kEinval};
      return r;
    case kCmdRead:
    case kCmdWrite:
    case kCmdTrim:
    case kCmdCache:
    case kCmdWriteZeroes:
      break;
    case kCmdBlockStatus:
      if (!info.block_status || r.length == 0 || (r.flags & ~kCmdFlagReqOne) != 0) {
        return RequestError{kEinval};
      }
      if (r.offset > info.size_bytes || r.length > info.size_bytes - r.offset)
        return RequestError{kEinval};
      return r;
    default:
      return RequestError{kEinval};
  }
  const uint16_t allowed = r.type == kCmdWriteZeroes ? (kCmdFlagFua | kCmdFlagNoHole)
                           : r.type == kCmdRead || r.type == kCmdCache ? 0
                                                                       : kCmdFlagFua;
  if ((r.flags & ~allowed) != 0) return RequestError{kEinval};
  if ((r.type == kCmdWrite || r.type == kCmdTrim || r.type == kCmdWriteZeroes) && info.read_only) {
    return RequestError{kEperm};
  }
  if ((r.type == kCmdRead || r.type == kCmdWrite) && r.length > kMaxRequestBytes) {
    // A write's payload follows: the stream cannot be resynchronized without reading it.
    return RequestError{kEoverflow, /*fatal=*/r.type == kCmdWrite};
  }
  if (r.offset > info.size_bytes || r.length > info.size_bytes - r.offset)
    return RequestError{kEinval};
  if (r.offset % kMinBlockBytes != 0 || r.length % kMinBlockBytes != 0)
    return RequestError{kEinval};
  return r;
}

}  // namespace strata::nbd
