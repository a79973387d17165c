#include "request.h"

namespace strata::nbd {
namespace {

uint64_t Get(std::span<const std::byte> p, size_t offset, size_t bytes) {
  uint64_t v = 0;
  for (size_t i = 0; i < bytes; ++i) v = (v << 8) | static_cast<uint8_t>(p[offset + i]);
  return v;
}

bool OutOfRange(const Request& r, const ExportInfo& info) {
  return r.offset > info.size_bytes || r.length > info.size_bytes - r.offset;
}

}  // namespace

std::variant<Request, RequestError> DecodeRequest(std::span<const std::byte> header,
                                                  bool extended) {
  const size_t expected = extended ? kExtendedHeaderBytes : kRequestHeaderBytes;
  const uint32_t magic = extended ? kExtendedRequestMagic : kRequestMagic;
  if (header.size() != expected || Get(header, 0, 4) != magic) {
    return RequestError{kEinval, /*fatal=*/true};
  }
  Request r;
  r.flags = static_cast<uint16_t>(Get(header, 4, 2));
  r.type = static_cast<uint16_t>(Get(header, 6, 2));
  r.cookie = Get(header, 8, 8);
  r.offset = Get(header, 16, 8);
  r.length = Get(header, 24, extended ? 8 : 4);
  return r;
}

std::variant<Request, RequestError> ValidateRequest(const Request& r, const ExportInfo& info) {
  // A write's payload follows its header: an error that leaves it unread would desynchronize
  // the stream, so a write longer than we will ever read is fatal.
  if (r.type == kCmdWrite && r.length > kMaxRequestBytes) {
    return RequestError{kEoverflow, /*fatal=*/true};
  }
  switch (r.type) {
    case kCmdDisc:
    case kCmdFlush:
      if (r.offset != 0 || r.length != 0 || (r.flags & ~kCmdFlagFua) != 0)
        return RequestError{kEinval};
      return r;
    case kCmdResize:
      if (!info.can_resize) return RequestError{info.read_only ? kEperm : kEinval};
      if (r.length != 0 || r.flags != 0) return RequestError{kEinval};
      return r;  // The size itself is the engine's to judge.
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
      if (OutOfRange(r, info)) return RequestError{kEinval};
      return r;
    default:
      return RequestError{kEinval};
  }
  const uint16_t allowed = r.type == kCmdWriteZeroes
                               ? (kCmdFlagFua | kCmdFlagNoHole | kCmdFlagFastZero)
                           : r.type == kCmdRead || r.type == kCmdCache ? 0
                                                                       : kCmdFlagFua;
  if ((r.flags & ~allowed) != 0) return RequestError{kEinval};
  if ((r.type == kCmdWrite || r.type == kCmdTrim || r.type == kCmdWriteZeroes) && info.read_only) {
    return RequestError{kEperm};
  }
  if (r.type == kCmdRead && r.length > kMaxRequestBytes) return RequestError{kEoverflow};
  // Without extended headers TRIM, WRITE_ZEROES and CACHE are bounded by their 32-bit field.
  if (OutOfRange(r, info)) return RequestError{kEinval};
  if (r.offset % kMinBlockBytes != 0 || r.length % kMinBlockBytes != 0)
    return RequestError{kEinval};
  return r;
}

}  // namespace strata::nbd
