#pragma once
// Decoding and validation of one NBD request against its export, touching no socket (so it can
// be fuzzed): returns the checked request or the NBD error to reply with.

#include <cstdint>
#include <span>
#include <variant>

#include "protocol.h"

namespace strata::nbd {

struct Request {
  uint16_t flags = 0;
  uint16_t type = 0;
  uint64_t cookie = 0;
  uint64_t offset = 0;  // For RESIZE: the new size.
  uint64_t length = 0;  // 32 bits on the wire unless extended headers are in use.
};

struct ExportInfo {
  uint64_t size_bytes = 0;
  bool read_only = false;
  bool block_status = false;  // A meta context was selected, so BLOCK_STATUS is allowed.
  bool extended = false;      // Extended headers: 64-bit lengths.
  bool can_resize = false;
};

// A request that failed validation: reply `error` (with its cookie), and close the connection
// when `fatal` (the stream cannot be trusted any more, e.g. a bad magic).
struct RequestError {
  uint32_t error = kEinval;
  bool fatal = false;
};

// Decodes a request header: kRequestHeaderBytes of them, or kExtendedHeaderBytes when
// `extended`. A header of the wrong size or magic is fatal.
std::variant<Request, RequestError> DecodeRequest(std::span<const std::byte> header, bool extended);
// Checks range, alignment, flags, read-only and the length bound of a decoded request.
// RequestError::error is 0 for a request that needs no check (DISC).
std::variant<Request, RequestError> ValidateRequest(const Request& request, const ExportInfo& info);

}  // namespace strata::nbd
