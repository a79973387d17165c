#include "session.h"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace strata::nbd {
namespace {

void Put(std::string& out, uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) out.push_back(static_cast<char>(v >> (8 * i)));
}
void PutAt(std::byte* out, uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; --i, ++out) *out = static_cast<std::byte>(v >> (8 * i));
}
uint64_t Get(const unsigned char* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v = (v << 8) | p[i];
  return v;
}
iovec Piece(const void* data, size_t n) { return {const_cast<void*>(data), n}; }

void LogLine(absl::string_view message) {
  const std::string line = absl::StrCat("stratad: nbd: ", message, "\n");
  std::fwrite(line.data(), 1, line.size(), stderr);
}

uint32_t ToNbdError(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
      return kEinval;
    case absl::StatusCode::kResourceExhausted:
      return kEnospc;
    case absl::StatusCode::kPermissionDenied:
      return kEperm;
    case absl::StatusCode::kUnimplemented:
      return kEnotsup;
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kFailedPrecondition:
      return kEshutdown;
    default:
      return kEio;
  }
}

}  // namespace

class Session::InFlight final : public VolumeIo {
 public:
  explicit InFlight(Session& session) : session_(session) {}
  void Done(absl::Status status) override {
    this->status = std::move(status);
    session_.Finished(*this);
  }

  Request request;
  absl::Status status;
  int64_t admitted_ns = 0;  // When the volume's limiter admitted it (for its latency figures).
  // Kept between requests up to kKeptBufferBytes; not zeroed (a read fills it, a write's
  // payload is received into it).
  std::unique_ptr<std::byte[]> buffer;
  size_t buffer_bytes = 0;
  std::span<std::byte> data;  // The request's bytes within buffer.

 private:
  Session& session_;
};

Session::Session(ExportCatalog& catalog, int fd, Transport* transport,
                 const SessionOptions& options)
    : catalog_(catalog),
      fd_(fd),
      transport_(transport),
      options_(options),
      writer_(transport),
      reader_(transport, [this](bool nothing_arrived) { return BeforeReceive(nothing_arrived); }) {}

BeforeRecv Session::BeforeReceive(bool nothing_arrived) {
  if (handshake_deadline_ != absl::InfiniteFuture() && fd_ >= 0) {
    const absl::Duration left = handshake_deadline_ - absl::Now();
    if (left <= absl::ZeroDuration()) {
      LogLine("handshake timed out");
      return BeforeRecv::kFail;
    }
    const timeval tv = absl::ToTimeval(std::max(left, absl::Milliseconds(1)));
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  }
  // With reads or writes running (in the kernel, or on the ring's helpers: a large enciphered
  // write), the session takes the client's next bytes if they have arrived, and otherwise
  // waits for the next of them to finish; writes are answered as they finish. So the loop
  // receives the next request while the last one is written: one connection of 1 MiB writes
  // to an encrypted volume ran 1.25x as fast (docs/benchmarks.md). Only while everything
  // unanswered is running: an operation queued (which only a wait starts) or a read's reply
  // would otherwise wait behind the client's next requests.
  if (ring_ != nullptr && !failed_ && ring_->in_flight() > 0) {
    if (nothing_arrived) {
      if (const absl::Status s = ring_->Wait(ring_->in_flight() - 1); !s.ok()) {
        LogLine(s.message());
        failed_ = true;
        return BeforeRecv::kFail;
      }
    }
    const unsigned running = ring_->ReapCompleted();
    if (running > 0 && running == ring_->in_flight()) {
      if (!AnswerFinishedWrites()) return BeforeRecv::kFail;
      if (finished_.empty()) return BeforeRecv::kTakeArrived;
    }
  }
  // Before the session blocks for input, what is queued goes to the disk and every reply out:
  // the loop never waits for a client with I/O of its own in flight (a snapshot of the volume
  // may be waiting for a queued write to land, and the client for its reply).
  return Drain() && writer_.Flush() ? BeforeRecv::kBlock : BeforeRecv::kFail;
}

Session::~Session() = default;

void Session::Run() {
  if (options_.handshake_timeout != absl::InfiniteDuration()) {
    handshake_deadline_ = absl::Now() + options_.handshake_timeout;
  }
  std::unique_ptr<Export> chosen = Handshake();
  if (handshake_deadline_ != absl::InfiniteFuture()) {
    handshake_deadline_ = absl::InfiniteFuture();
    const timeval none{};
    if (fd_ >= 0) ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof(none));
  }
  if (chosen != nullptr) {
    Transmit(*chosen);
    Drain();  // Requests in flight finish (and are answered) before the export closes.
  }
  writer_.Flush();
}

// ---------------------------------------------------------------------------------------------
// Handshake

bool Session::OptionReply(uint32_t option, uint32_t type, absl::string_view data) {
  std::string head;
  Put(head, kOptionReplyMagic, 8);
  Put(head, option, 4);
  Put(head, type, 4);
  Put(head, data.size(), 4);
  const iovec pieces[] = {Piece(head.data(), head.size()), Piece(data.data(), data.size())};
  return writer_.Send(pieces);
}

uint32_t Session::OpenError(const absl::Status& status) const {
  return status.code() == absl::StatusCode::kResourceExhausted ? kRepErrPolicy : kRepErrUnknown;
}

uint16_t Session::TransmissionFlags(const Export& e) const {
  uint16_t flags = kTxHasFlags | kTxSendFlush | kTxSendFua | kTxCanMultiConn | kTxSendCache;
  if (e.read_only()) {
    flags |= kTxReadOnly;
  } else {
    flags |= kTxSendTrim | kTxSendWriteZeroes | kTxSendFastZero;
  }
  if (e.is_volume()) flags |= kTxSendResize;
  return flags;
}

std::unique_ptr<Export> Session::Handshake() {
  std::string hello;
  Put(hello, kNbdMagic, 8);
  Put(hello, kOptionMagic, 8);
  Put(hello, kFlagFixedNewstyle | kFlagNoZeroes, 2);
  const iovec greeting[] = {Piece(hello.data(), hello.size())};
  if (!writer_.Send(greeting)) return nullptr;
  unsigned char client_flags[4];
  if (!reader_.Read(client_flags, 4)) return nullptr;
  const uint32_t flags = static_cast<uint32_t>(Get(client_flags, 4));
  if ((flags & kFlagFixedNewstyle) == 0 ||
      (flags & ~uint32_t{kFlagFixedNewstyle | kFlagNoZeroes}) != 0) {
    return nullptr;  // Only fixed newstyle clients.
  }
  no_zeroes_ = (flags & kFlagNoZeroes) != 0;
  for (int i = 0; i < kMaxOptions; ++i) {
    unsigned char header[16];
    if (!reader_.Read(header, 16) || Get(header, 8) != kOptionMagic) return nullptr;
    const uint32_t option = static_cast<uint32_t>(Get(header + 8, 4));
    const uint32_t length = static_cast<uint32_t>(Get(header + 12, 4));
    if (option == kOptStartTls) {
      if (!reader_.Discard(length) || !StartTls(option, length)) return nullptr;
      continue;
    }
    if (length > kMaxOptionBytes) {
      if (!reader_.Discard(length) || !OptionReply(option, kRepErrInvalid, "option too long")) {
        return nullptr;
      }
      continue;
    }
    std::string data(length, '\0');
    if (!reader_.Read(data.data(), length)) return nullptr;
    if (MustUpgrade() && option != kOptAbort) {
      // FORCEDTLS: EXPORT_NAME cannot fail, so it ends the session.
      const bool tls = options_.tls_mode != TlsMode::kOff && options_.tls != nullptr;
      const char* why =
          options_.tls_mode == TlsMode::kRequire ? "this server requires TLS (NBD_OPT_STARTTLS)"
          : tls ? "exports need an account: upgrade with NBD_OPT_STARTTLS, the PSK identity being "
                  "your access key id and the key `strata nbd-key` prints, or connect to the "
                  "unix socket as the server's user"
                : "exports need an account, and TLS is off on this server: connect to the unix "
                  "socket as the server's user";
      if (option == kOptExportName ||
          !OptionReply(option, tls ? kRepErrTlsReqd : kRepErrPolicy, why)) {
        return nullptr;
      }
      continue;
    }
    switch (option) {
      case kOptExportName: {
        absl::StatusOr<std::unique_ptr<Export>> e = catalog_.Open(data, account_);
        if (!e.ok()) return nullptr;  // This option has no error reply: close.
        std::string out;
        Put(out, (*e)->size_bytes(), 8);
        Put(out, TransmissionFlags(**e), 2);
        if (!no_zeroes_) out.append(124, '\0');
        const iovec reply[] = {Piece(out.data(), out.size())};
        if (!writer_.Send(reply)) return nullptr;
        return std::move(*e);
      }
      case kOptAbort:
        OptionReply(option, kRepAck);
        return nullptr;
      case kOptList: {
        if (length != 0) {
          if (!OptionReply(option, kRepErrInvalid)) return nullptr;
          break;
        }
        for (const std::string& name : catalog_.List(account_)) {
          std::string entry;
          Put(entry, name.size(), 4);
          entry += name;
          if (!OptionReply(option, kRepServer, entry)) return nullptr;
        }
        if (!OptionReply(option, kRepAck)) return nullptr;
        break;
      }
      case kOptInfo:
      case kOptGo: {
        std::unique_ptr<Export> e;
        if (!InfoOrGo(option, data, e)) return nullptr;
        if (e != nullptr && option == kOptGo) return e;
        break;
      }
      case kOptStructuredReply:
        if (length != 0 || extended_) {
          if (!OptionReply(option, kRepErrInvalid,
                           extended_ ? "extended headers are in use" : "")) {
            return nullptr;
          }
          break;
        }
        structured_ = true;
        if (!OptionReply(option, kRepAck)) return nullptr;
        break;
      case kOptExtendedHeaders:
        if (length != 0 || extended_) {
          if (!OptionReply(option, kRepErrInvalid)) return nullptr;
          break;
        }
        extended_ = structured_ = true;
        want_allocation_ = want_changes_ = false;  // Contexts are chosen again under new headers.
        if (!OptionReply(option, kRepAck)) return nullptr;
        break;
      case kOptListMetaContext:
      case kOptSetMetaContext:
        if (!MetaContext(option, data)) return nullptr;
        break;
      default:
        if (!OptionReply(option, kRepErrUnsup)) return nullptr;
    }
  }
  return nullptr;  // Too many options.
}

bool Session::MustUpgrade() const {
  if (tls_ != nullptr) return false;
  if (options_.tls_mode == TlsMode::kRequire) return true;
  return options_.auth == NbdAuth::kAccount && !options_.operator_peer;
}

bool Session::StartTls(uint32_t option, uint32_t length) {
  if (options_.tls_mode == TlsMode::kOff || options_.tls == nullptr || fd_ < 0) {
    return OptionReply(option, kRepErrUnsup, "TLS is not configured on this server");
  }
  if (tls_ != nullptr || length != 0) return OptionReply(option, kRepErrInvalid);
  if (!OptionReply(option, kRepAck) || !writer_.Flush()) return false;
  if (reader_.buffered() != 0) return false;  // Plaintext sent after STARTTLS: not a client.
  absl::StatusOr<std::unique_ptr<TlsTransport>> tls = options_.tls->Accept(fd_);
  if (!tls.ok()) {
    LogLine(tls.status().message());
    return false;
  }
  std::optional<std::string> account = catalog_.AccountFor((*tls)->peer_identity());
  if (!account.has_value()) {
    LogLine(absl::StrCat("TLS identity \"", (*tls)->peer_identity(), "\" names no account"));
    return false;
  }
  tls_ = std::move(*tls);
  account_ = std::move(account);
  transport_ = tls_.get();
  reader_.set_transport(transport_);
  writer_.set_transport(transport_);
  // Nothing negotiated in plaintext carries over.
  structured_ = extended_ = want_allocation_ = want_changes_ = false;
  return true;
}

bool Session::InfoOrGo(uint32_t option, const std::string& data, std::unique_ptr<Export>& chosen) {
  const auto* p = reinterpret_cast<const unsigned char*>(data.data());
  if (data.size() < 6) return OptionReply(option, kRepErrInvalid);
  const uint32_t name_length = static_cast<uint32_t>(Get(p, 4));
  if (data.size() < 4 + static_cast<size_t>(name_length) + 2) {
    return OptionReply(option, kRepErrInvalid);
  }
  const std::string name = data.substr(4, name_length);
  const uint32_t requests = static_cast<uint32_t>(Get(p + 4 + name_length, 2));
  if (data.size() != 4 + static_cast<size_t>(name_length) + 2 + 2 * requests) {
    return OptionReply(option, kRepErrInvalid);
  }
  absl::StatusOr<std::unique_ptr<Export>> e = catalog_.Open(name, account_);
  if (!e.ok()) return OptionReply(option, OpenError(e.status()), e.status().message());
  std::string info;
  Put(info, kInfoExport, 2);
  Put(info, (*e)->size_bytes(), 8);
  Put(info, TransmissionFlags(**e), 2);
  if (!OptionReply(option, kRepInfo, info)) return false;
  std::string sizes;
  Put(sizes, kInfoBlockSize, 2);
  Put(sizes, kMinBlockBytes, 4);
  Put(sizes, kPreferredBlockBytes, 4);
  Put(sizes, kMaxRequestBytes, 4);
  if (!OptionReply(option, kRepInfo, sizes)) return false;
  std::string named;
  Put(named, kInfoName, 2);
  named += (*e)->name();
  if (!OptionReply(option, kRepInfo, named)) return false;
  std::string description;
  Put(description, kInfoDescription, 2);
  description += (*e)->description();
  if (!OptionReply(option, kRepInfo, description)) return false;
  if (!OptionReply(option, kRepAck)) return false;
  if (option == kOptGo) chosen = std::move(*e);
  return true;
}

// NBD_OPT_LIST_META_CONTEXT / SET_META_CONTEXT: base:allocation for every export, and
// strata:changed for volumes.
bool Session::MetaContext(uint32_t option, const std::string& data) {
  const bool set = option == kOptSetMetaContext;
  if (set) want_allocation_ = want_changes_ = false;  // Replaced even on failure.
  if (!structured_)
    return OptionReply(option, kRepErrInvalid, "negotiate structured replies first");
  const auto* p = reinterpret_cast<const unsigned char*>(data.data());
  size_t at = 0;
  auto need = [&](size_t n) { return data.size() - at >= n; };
  if (!need(4)) return OptionReply(option, kRepErrInvalid);
  const uint32_t name_length = static_cast<uint32_t>(Get(p, 4));
  at = 4;
  if (!need(name_length) || !need(static_cast<size_t>(name_length) + 4)) {
    return OptionReply(option, kRepErrInvalid);
  }
  const std::string name = data.substr(at, name_length);
  at += name_length;
  const uint32_t queries = static_cast<uint32_t>(Get(p + at, 4));
  at += 4;
  bool allocation = !set && queries == 0;
  bool changes = !set && queries == 0;
  for (uint32_t i = 0; i < queries; ++i) {
    if (!need(4)) return OptionReply(option, kRepErrInvalid);
    const uint32_t query_length = static_cast<uint32_t>(Get(p + at, 4));
    at += 4;
    if (!need(query_length)) return OptionReply(option, kRepErrInvalid);
    const std::string query = data.substr(at, query_length);
    at += query_length;
    allocation |= query == kBaseAllocation || (!set && query == "base:");
    changes |= query == kStrataChanged || (!set && query == "strata:");
  }
  if (at != data.size()) return OptionReply(option, kRepErrInvalid);
  absl::StatusOr<std::unique_ptr<Export>> e = catalog_.Open(name, account_);
  if (!e.ok()) return OptionReply(option, OpenError(e.status()), e.status().message());
  changes &= (*e)->is_volume();
  auto reply = [&](uint32_t id, const char* context) {
    std::string out;
    Put(out, set ? id : 0, 4);
    out += context;
    return OptionReply(option, kRepMetaContext, out);
  };
  if (allocation && !reply(kBaseAllocationId, kBaseAllocation)) return false;
  if (changes && !reply(kStrataChangedId, kStrataChanged)) return false;
  if (set) {
    want_allocation_ = allocation;
    want_changes_ = changes;
    meta_export_ = name;
  }
  return OptionReply(option, kRepAck);
}

// ---------------------------------------------------------------------------------------------
// Transmission

bool Session::SendHeader(uint64_t cookie, uint16_t flags, uint16_t type, uint64_t offset,
                         uint64_t payload_length, std::span<const iovec> payload) {
  std::byte head[kExtendedHeaderBytes];
  size_t n = 0;
  if (extended_) {
    PutAt(head, kExtendedReplyMagic, 4);
    PutAt(head + 4, flags, 2);
    PutAt(head + 6, type, 2);
    PutAt(head + 8, cookie, 8);
    PutAt(head + 16, offset, 8);
    PutAt(head + 24, payload_length, 8);
    n = 32;
  } else {
    PutAt(head, kStructuredReplyMagic, 4);
    PutAt(head + 4, flags, 2);
    PutAt(head + 6, type, 2);
    PutAt(head + 8, cookie, 8);
    PutAt(head + 16, payload_length, 4);
    n = 20;
  }
  iovec pieces[4] = {Piece(head, n)};
  size_t count = 1;
  for (const iovec& p : payload) pieces[count++] = p;
  return writer_.Send(std::span(pieces, count));
}

bool Session::Error(const Request& r, uint32_t error, absl::string_view message) {
  // Simple replies serve every command without structured replies, and every command but
  // READ and BLOCK_STATUS with them; extended headers always use chunks.
  if (!extended_ && (!structured_ || (r.type != kCmdRead && r.type != kCmdBlockStatus))) {
    std::byte head[16];
    PutAt(head, kSimpleReplyMagic, 4);
    PutAt(head + 4, error, 4);
    PutAt(head + 8, r.cookie, 8);
    const iovec pieces[] = {Piece(head, sizeof(head))};
    return writer_.Send(pieces);
  }
  message = message.substr(0, 1024);
  std::byte payload[6];
  PutAt(payload, error, 4);
  PutAt(payload + 4, message.size(), 2);
  const iovec pieces[] = {Piece(payload, sizeof(payload)), Piece(message.data(), message.size())};
  return SendHeader(r.cookie, kReplyFlagDone, kReplyTypeError, r.offset, 6 + message.size(),
                    pieces);
}

bool Session::Done(const Request& r, const absl::Status& status) {
  if (!status.ok()) {
    if (status.code() != absl::StatusCode::kInvalidArgument &&
        status.code() != absl::StatusCode::kPermissionDenied) {
      LogLine(absl::StrCat("request type ", r.type, " at ", r.offset, ": ", status.message()));
    }
    return Error(r, ToNbdError(status), status.message());
  }
  if (extended_) return SendHeader(r.cookie, kReplyFlagDone, kReplyTypeNone, r.offset, 0, {});
  std::byte head[16];
  PutAt(head, kSimpleReplyMagic, 4);
  PutAt(head + 4, 0, 4);
  PutAt(head + 8, r.cookie, 8);
  const iovec pieces[] = {Piece(head, sizeof(head))};
  return writer_.Send(pieces);
}

bool Session::ReadReply(const Request& r, std::span<const std::byte> data) {
  if (!structured_) {
    std::byte head[16];
    PutAt(head, kSimpleReplyMagic, 4);
    PutAt(head + 4, 0, 4);
    PutAt(head + 8, r.cookie, 8);
    const iovec pieces[] = {Piece(head, sizeof(head)), Piece(data.data(), data.size())};
    return writer_.Send(pieces);
  }
  std::byte offset[8];
  PutAt(offset, r.offset, 8);
  const iovec pieces[] = {Piece(offset, 8), Piece(data.data(), data.size())};
  return SendHeader(r.cookie, kReplyFlagDone, kReplyTypeOffsetData, r.offset, 8 + data.size(),
                    pieces);
}

bool Session::BlockStatus(Export& e, const Request& r) {
  const size_t max = (r.flags & kCmdFlagReqOne) != 0 ? 1 : kMaxBlockStatusExtents;
  // (context id, runs of (length, flags)), one reply chunk per selected context.
  std::vector<std::pair<uint32_t, std::vector<std::pair<uint64_t, uint32_t>>>> replies;
  if (want_allocation_) {
    absl::StatusOr<std::vector<AllocationExtent>> map = e.Allocation(r.offset, r.length, max);
    if (!map.ok()) return Done(r, map.status());
    auto& runs = replies.emplace_back(kBaseAllocationId, 0).second;
    for (const AllocationExtent& x : *map)
      runs.emplace_back(x.length_bytes, x.zero ? (kStateHole | kStateZero) : 0);
  }
  if (want_changes_) {
    absl::StatusOr<std::vector<ChangeExtent>> map = e.Changes(r.offset, r.length, max);
    if (!map.ok()) return Done(r, map.status());
    auto& runs = replies.emplace_back(kStrataChangedId, 0).second;
    for (const ChangeExtent& x : *map)
      runs.emplace_back(x.length_bytes, x.changed ? kStateChanged : 0);
  }
  for (size_t i = 0; i < replies.size(); ++i) {
    const auto& [id, runs] = replies[i];
    std::string payload;
    Put(payload, id, 4);
    if (extended_) {
      Put(payload, runs.size(), 4);
      for (const auto& [length, flags] : runs) {
        Put(payload, length, 8);
        Put(payload, flags, 8);
      }
    } else {
      // Descriptors are 32-bit: a longer run is split (the request length bounds the sum).
      size_t count = 0;
      for (const auto& [length, flags] : runs) {
        for (uint64_t left = length; left > 0 && count < max; ++count) {
          const uint64_t piece = std::min<uint64_t>(left, 0x80000000u);
          Put(payload, piece, 4);
          Put(payload, flags, 4);
          left -= piece;
        }
      }
    }
    const uint16_t flags = i + 1 == replies.size() ? kReplyFlagDone : 0;
    const uint16_t type = extended_ ? kReplyTypeBlockStatusExt : kReplyTypeBlockStatus;
    const iovec pieces[] = {Piece(payload.data(), payload.size())};
    if (!SendHeader(r.cookie, flags, type, r.offset, payload.size(), pieces)) return false;
  }
  return true;
}

absl::Status Session::WriteZeroes(Export& e, const Request& r) {
  // Without NO_HOLE the range may be deallocated; with it, it stays allocated. Both are fast
  // (no zeros are written), so FAST_ZERO never fails.
  absl::Status s = (r.flags & kCmdFlagNoHole) != 0 ? e.WriteZeroes(r.offset, r.length, false)
                                                   : e.Trim(r.offset, r.length);
  if (s.ok() && (r.flags & kCmdFlagFua) != 0) s = e.Flush();
  return s;
}

uint64_t SessionOptions::CacheSizedReadBurst() {
  const long l2 = ::sysconf(_SC_LEVEL2_CACHE_SIZE);
  return l2 > 0 ? static_cast<uint64_t>(l2) : uint64_t{1} << 20;
}

Session::InFlight* Session::TakeSlot(const Request& r) {
  // Reads are held to a cache's worth: a reply's send copies its bytes from where the read put
  // them, and 8 MiB of 1 MiB reads gathered before their replies had left the cache by then
  // (the send copy cost 4x nbd-server's per byte; two connections of 1 MiB reads ran 16-24%
  // faster with the limit, docs/benchmarks.md). Not reads that wait on the network, whose latency
  // only several in flight hide. Writes are not held: a burst of them goes through the ring,
  // whose workers copy into the page cache beside this thread.
  const uint64_t limit =
      r.type == kCmdRead && !reads_wait_on_network_ ? options_.read_burst_bytes : kMaxInFlightBytes;
  if (free_.empty() || (in_flight_bytes_ > 0 && in_flight_bytes_ + r.length > limit)) {
    if (!Drain()) return nullptr;
  }
  InFlight* slot = free_.back();
  free_.pop_back();
  slot->request = r;
  if (slot->buffer_bytes < r.length) {
    slot->buffer = std::make_unique_for_overwrite<std::byte[]>(r.length);
    slot->buffer_bytes = r.length;
  }
  slot->data = std::span(slot->buffer.get(), r.length);
  in_flight_bytes_ += r.length;
  return slot;
}

void Session::Release(InFlight& slot) {
  in_flight_bytes_ -= slot.data.size();
  slot.data = {};
  if (slot.buffer_bytes > kKeptBufferBytes) {
    slot.buffer.reset();
    slot.buffer_bytes = 0;
  }
  free_.push_back(&slot);
}

void Session::Finished(InFlight& slot) { finished_.push_back(&slot); }

bool Session::Drain() {
  if (ring_ != nullptr && ring_->in_flight() > 0) {
    if (const absl::Status s = ring_->Wait(); !s.ok()) {
      LogLine(s.message());
      failed_ = true;
    }
  }
  // Replies go out only now, with nothing in flight: a client slow to read them holds up only
  // its own connection, never a queued write that a snapshot of the volume waits for.
  const int64_t now_ns =
      limiter_ != nullptr && !finished_.empty() ? absl::GetCurrentTimeNanos() : 0;
  for (InFlight* slot : finished_) Answer(*slot, now_ns);
  finished_.clear();
  return !failed_;
}

bool Session::Answer(InFlight& slot, int64_t now_ns) {
  const Request& r = slot.request;
  if (limiter_ != nullptr) {
    limiter_->Finished(r.type == kCmdWrite, absl::Nanoseconds(now_ns - slot.admitted_ns));
  }
  if (!failed_) {
    failed_ =
        !(r.type == kCmdRead && slot.status.ok() ? ReadReply(r, slot.data) : Done(r, slot.status));
  }
  Release(slot);
  return !failed_;
}

bool Session::AnswerFinishedWrites() {
  // A write's reply is small (an error's carries a message): it is gathered, never sent with
  // a wait, so a client that does not read its replies holds up no write still running.
  constexpr size_t kMostReplyBytes = 4096;
  const int64_t now_ns =
      limiter_ != nullptr && !finished_.empty() ? absl::GetCurrentTimeNanos() : 0;
  std::erase_if(finished_, [&](InFlight* slot) {
    if (slot->request.type != kCmdWrite || writer_.room() < kMostReplyBytes) return false;
    Answer(*slot, now_ns);
    return true;
  });
  if (!failed_ && !writer_.FlushWithoutWaiting()) failed_ = true;
  return !failed_;
}

bool Session::SplicesWrite(Export& e, const Request& r) {
  if (r.length < kSplicedWriteBytes || r.length > kPipeBytes || !transport_->can_splice() ||
      !e.SplicesWrite(r.offset, r.length)) {
    return false;
  }
  if (pipe_ == nullptr && !pipe_refused_) {
    pipe_ = PayloadPipe::Create(kPipeBytes);
    pipe_refused_ = pipe_ == nullptr;
  }
  return pipe_ != nullptr;
}

bool Session::HoldBack(Export& e, const Request& r) {
  IoLimiter* limiter = e.limiter();
  if (limiter == nullptr) return true;
  admitted_ns_ = absl::GetCurrentTimeNanos();
  const absl::Duration wait = limiter->Admit(r.type == kCmdWrite, r.offset, r.length, admitted_ns_);
  if (wait <= absl::ZeroDuration()) return true;
  // Over the volume's rate: what is in flight is answered first, then this request waits its
  // turn (queued, never failed; the other connections of the volume share the budget).
  const bool drained = Drain() && writer_.Flush();
  absl::SleepFor(wait);
  limiter->Released();
  return drained;
}

bool Session::Execute(Export& e, const Request& r) {
  const bool fua = (r.flags & kCmdFlagFua) != 0;
  // Reads and writes join the ring; every other command first waits for them, so a FLUSH
  // covers every write answered before it and BLOCK_STATUS sees them.
  if (r.type != kCmdRead && r.type != kCmdWrite && !Drain()) return false;
  if ((r.type == kCmdRead || r.type == kCmdWrite) && !HoldBack(e, r)) return false;
  switch (r.type) {
    case kCmdRead: {
      InFlight* slot = TakeSlot(r);
      if (slot == nullptr) return false;
      slot->admitted_ns = admitted_ns_;
      e.SubmitRead(r.offset, slot->data, *ring_, *slot);
      return !failed_;
    }
    case kCmdWrite: {
      InFlight* slot = TakeSlot(r);
      if (slot == nullptr) return false;
      slot->admitted_ns = admitted_ns_;
      size_t received = 0;  // Payload bytes already in slot->data.
      if (!fua && SplicesWrite(e, r)) {
        size_t moved = 0;
        const BufferedReader::SpliceOutcome outcome = reader_.SpliceTo(*pipe_, r.length, moved);
        if (outcome == BufferedReader::SpliceOutcome::kFailed) {
          Release(*slot);
          return false;
        }
        if (outcome == BufferedReader::SpliceOutcome::kMoved) {
          if (std::optional<absl::Status> s =
                  e.WriteSpliced(r.offset, pipe_->read_fd(), r.length)) {
            // A failed write may leave some of the payload in the pipe.
            if (!s->ok() && !pipe_->Discard()) failed_ = true;
            slot->Done(*std::move(s));
            return !failed_;
          }
        }
        // Not spliced after all: the bytes in the pipe are the payload's first.
        if (pipe_->ReadOut(slot->data.first(moved)) != static_cast<ssize_t>(moved)) {
          Release(*slot);
          return false;
        }
        received = moved;
      }
      if (!reader_.Read(slot->data.data() + received, slot->data.size() - received)) {
        Release(*slot);
        return false;
      }
      e.SubmitWrite(r.offset, slot->data, fua, *ring_, *slot);
      return !failed_;
    }
    case kCmdBlockStatus:
      return BlockStatus(e, r);
    case kCmdFlush:
      return Done(r, e.Flush());
    case kCmdTrim: {
      absl::Status s = e.Trim(r.offset, r.length);
      if (s.ok() && fua) s = e.Flush();
      return Done(r, s);
    }
    case kCmdWriteZeroes:
      return Done(r, WriteZeroes(e, r));
    case kCmdResize:
      return Done(r, e.Resize(r.offset));
    case kCmdCache:
      return Done(r, absl::OkStatus());  // The data is local already.
    default:
      return Error(r, kEinval);
  }
}

void Session::Transmit(Export& e) {
  absl::StatusOr<std::unique_ptr<IoRing>> ring = IoRing::Create(kMaxInFlight);
  if (!ring.ok()) {
    LogLine(ring.status().message());
    return;
  }
  ring_ = std::move(*ring);
  limiter_ = e.limiter();
  reads_wait_on_network_ = e.reads_wait_on_network();
  for (unsigned i = 0; i < kMaxInFlight; ++i) {
    slots_.push_back(std::make_unique<InFlight>(*this));
    free_.push_back(slots_.back().get());
  }
  finished_.reserve(kMaxInFlight);
  const size_t header_bytes = extended_ ? kExtendedHeaderBytes : kRequestHeaderBytes;
  for (;;) {
    std::array<std::byte, kExtendedHeaderBytes> header;
    // The wait for the next request may poll: a client at queue depth 1 sends it at once.
    if (!reader_.Read(header.data(), header_bytes, RecvWait::kPollFirst)) return;
    std::variant<Request, RequestError> decoded =
        DecodeRequest(std::span(header).first(header_bytes), extended_);
    if (std::holds_alternative<RequestError>(decoded)) return;  // Bad magic: cannot resync.
    const Request& raw = std::get<Request>(decoded);
    const ExportInfo info{
        .size_bytes = e.size_bytes(),
        .read_only = e.read_only(),
        .block_status = (want_allocation_ || want_changes_) && meta_export_ == e.name(),
        .extended = extended_,
        .can_resize = e.is_volume(),
    };
    std::variant<Request, RequestError> checked = ValidateRequest(raw, info);
    if (const RequestError* err = std::get_if<RequestError>(&checked)) {
      if (err->fatal) {
        Error(raw, err->error);
        return;
      }
      if (raw.type == kCmdWrite && !reader_.Discard(raw.length)) return;
      if (!Error(raw, err->error)) return;
      continue;
    }
    const Request& r = std::get<Request>(checked);
    if (r.type == kCmdDisc) return;
    if (!Execute(e, r)) return;
  }
}

}  // namespace strata::nbd
