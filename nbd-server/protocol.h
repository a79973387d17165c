#pragma once
// NBD protocol constants (fixed newstyle handshake, simple replies), as in
// ../shared/reference/nbd-protocol.md. All integers on the wire are big-endian.
//
// Handshake:  server "NBDMAGIC"(8) | "IHAVEOPT"(8) | handshake flags(2)
//             client flags(4)
// Option:     client IHAVEOPT(8) | option(4) | length(4) | data
//             server kOptionReplyMagic(8) | option(4) | reply type(4) | length(4) | data
// Request:    kRequestMagic(4) | flags(2) | type(2) | cookie(8) | offset(8) | length(4)
// Reply:      kSimpleReplyMagic(4) | error(4) | cookie(8) | data (READ only)
// With extended headers (NBD_OPT_EXTENDED_HEADERS) both grow to 32 bytes and lengths to 64 bits:
// Request:    kExtendedRequestMagic(4) | flags(2) | type(2) | cookie(8) | offset(8) | length(8)
// Reply:      kExtendedReplyMagic(4) | flags(2) | type(2) | cookie(8) | offset(8) | length(8) |
//             payload (every reply is a chunk: NONE, OFFSET_DATA, BLOCK_STATUS_EXT, ERROR)

#include <cstdint>

namespace strata::nbd {

inline constexpr uint64_t kNbdMagic = 0x4e42444d41474943ull;     // "NBDMAGIC"
inline constexpr uint64_t kOptionMagic = 0x49484156454F5054ull;  // "IHAVEOPT"
inline constexpr uint64_t kOptionReplyMagic = 0x3e889045565a9ull;
inline constexpr uint32_t kRequestMagic = 0x25609513;
inline constexpr uint32_t kSimpleReplyMagic = 0x67446698;
inline constexpr size_t kRequestHeaderBytes = 4 + 2 + 2 + 8 + 8 + 4;
static_assert(kRequestHeaderBytes == 28);
inline constexpr uint32_t kExtendedRequestMagic = 0x21e41c71;
inline constexpr uint32_t kExtendedReplyMagic = 0x6e8a278c;
inline constexpr size_t kExtendedHeaderBytes = 32;

// Handshake flags (server) and client flags.
inline constexpr uint16_t kFlagFixedNewstyle = 1 << 0;
inline constexpr uint16_t kFlagNoZeroes = 1 << 1;

// Options.
inline constexpr uint32_t kOptExportName = 1;
inline constexpr uint32_t kOptAbort = 2;
inline constexpr uint32_t kOptList = 3;
inline constexpr uint32_t kOptStartTls = 5;
inline constexpr uint32_t kOptInfo = 6;
inline constexpr uint32_t kOptGo = 7;
inline constexpr uint32_t kOptStructuredReply = 8;
inline constexpr uint32_t kOptListMetaContext = 9;
inline constexpr uint32_t kOptSetMetaContext = 10;
inline constexpr uint32_t kOptExtendedHeaders = 11;

// Option replies.
inline constexpr uint32_t kRepAck = 1;
inline constexpr uint32_t kRepServer = 2;
inline constexpr uint32_t kRepInfo = 3;
inline constexpr uint32_t kRepMetaContext = 4;
inline constexpr uint32_t kRepErrUnsup = 0x80000001;
inline constexpr uint32_t kRepErrPolicy = 0x80000002;
inline constexpr uint32_t kRepErrInvalid = 0x80000003;
inline constexpr uint32_t kRepErrTlsReqd = 0x80000005;
inline constexpr uint32_t kRepErrUnknown = 0x80000006;
inline constexpr uint32_t kRepErrShutdown = 0x80000007;

// Info types.
inline constexpr uint16_t kInfoExport = 0;
inline constexpr uint16_t kInfoName = 1;
inline constexpr uint16_t kInfoDescription = 2;
inline constexpr uint16_t kInfoBlockSize = 3;

// Transmission flags.
inline constexpr uint16_t kTxHasFlags = 1 << 0;
inline constexpr uint16_t kTxReadOnly = 1 << 1;
inline constexpr uint16_t kTxSendFlush = 1 << 2;
inline constexpr uint16_t kTxSendFua = 1 << 3;
inline constexpr uint16_t kTxSendTrim = 1 << 5;
inline constexpr uint16_t kTxSendWriteZeroes = 1 << 6;
inline constexpr uint16_t kTxCanMultiConn = 1 << 8;
inline constexpr uint16_t kTxSendResize = 1 << 9;  // The RESIZE extension.
inline constexpr uint16_t kTxSendCache = 1 << 10;
inline constexpr uint16_t kTxSendFastZero = 1 << 11;

// Commands and their flags.
inline constexpr uint16_t kCmdRead = 0;
inline constexpr uint16_t kCmdWrite = 1;
inline constexpr uint16_t kCmdDisc = 2;
inline constexpr uint16_t kCmdFlush = 3;
inline constexpr uint16_t kCmdTrim = 4;
inline constexpr uint16_t kCmdCache = 5;
inline constexpr uint16_t kCmdWriteZeroes = 6;
inline constexpr uint16_t kCmdBlockStatus = 7;
inline constexpr uint16_t kCmdResize = 8;  // The new size travels in the offset field.
inline constexpr uint16_t kCmdFlagFua = 1 << 0;
inline constexpr uint16_t kCmdFlagNoHole = 1 << 1;
inline constexpr uint16_t kCmdFlagReqOne = 1 << 3;
inline constexpr uint16_t kCmdFlagFastZero = 1 << 4;

// Structured replies: kStructuredReplyMagic(4) | flags(2) | type(2) | cookie(8) | length(4) |
// payload
inline constexpr uint32_t kStructuredReplyMagic = 0x668e33ef;
inline constexpr uint16_t kReplyFlagDone = 1 << 0;
inline constexpr uint16_t kReplyTypeNone = 0;
inline constexpr uint16_t kReplyTypeOffsetData = 1;   // offset(8) | data
inline constexpr uint16_t kReplyTypeBlockStatus = 5;  // context id(4) | (length(4) | flags(4))*
// Extended headers only: context id(4) | count(4) | (length(8) | flags(8))*
inline constexpr uint16_t kReplyTypeBlockStatusExt = 6;
inline constexpr uint16_t kReplyTypeError =
    (1 << 15) + 1;  // error(4) | message length(2) | message

// Meta contexts: their names, the ids we give them, and their status flags.
inline constexpr char kBaseAllocation[] = "base:allocation";
inline constexpr uint32_t kBaseAllocationId = 1;
inline constexpr uint32_t kStateHole = 1 << 0;
inline constexpr uint32_t kStateZero = 1 << 1;
// Chunks changed since the volume's last snapshot (what an incremental backup must read).
inline constexpr char kStrataChanged[] = "strata:changed";
inline constexpr uint32_t kStrataChangedId = 2;
inline constexpr uint32_t kStateChanged = 1 << 0;
// Block status replies carry at most this many descriptors.
inline constexpr size_t kMaxBlockStatusExtents = 1024;

// Errors (errno values as the protocol defines them).
inline constexpr uint32_t kEperm = 1;
inline constexpr uint32_t kEio = 5;
inline constexpr uint32_t kEnomem = 12;
inline constexpr uint32_t kEinval = 22;
inline constexpr uint32_t kEnospc = 28;
inline constexpr uint32_t kEoverflow = 75;
inline constexpr uint32_t kEnotsup = 95;
inline constexpr uint32_t kEshutdown = 108;

// Sizes we advertise: libnbd clients refuse I/O below the minimum; nbdcopy ignores the maximum,
// so it must be large.
inline constexpr uint32_t kMinBlockBytes = 512;
inline constexpr uint32_t kPreferredBlockBytes = 4096;
inline constexpr uint32_t kMaxRequestBytes = 32u << 20;
static_assert(kMaxRequestBytes % kMinBlockBytes == 0);
// Bounds on the handshake.
inline constexpr uint32_t kMaxOptionBytes = 4096;
inline constexpr int kMaxOptions = 64;

}  // namespace strata::nbd
