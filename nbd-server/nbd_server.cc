#include "nbd_server.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <optional>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "protocol.h"
#include "request.h"

namespace strata::nbd {
namespace {

// Blocking socket I/O with full-length semantics.
class Conn {
 public:
  explicit Conn(int fd) : fd_(fd) {}
  bool Read(void* buf, size_t n) {
    auto* p = static_cast<char*>(buf);
    while (n > 0) {
      const ssize_t got = ::recv(fd_, p, n, 0);
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) return false;
      p += got;
      n -= static_cast<size_t>(got);
    }
    return true;
  }
  bool Write(const void* buf, size_t n) {
    auto* p = static_cast<const char*>(buf);
    while (n > 0) {
      const ssize_t put = ::send(fd_, p, n, MSG_NOSIGNAL);
      if (put < 0 && errno == EINTR) continue;
      if (put <= 0) return false;
      p += put;
      n -= static_cast<size_t>(put);
    }
    return true;
  }
  bool Discard(size_t n) {
    char sink[65536];
    while (n > 0) {
      const size_t step = std::min(n, sizeof(sink));
      if (!Read(sink, step)) return false;
      n -= step;
    }
    return true;
  }

 private:
  const int fd_;
};

void Put(std::string& out, uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) out.push_back(static_cast<char>(v >> (8 * i)));
}
uint64_t Get(const unsigned char* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v = (v << 8) | p[i];
  return v;
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
      return kEio;  // Includes kDataLoss: the chunk is named in the log.
  }
}

constexpr uint16_t kTransmissionFlags = kTxHasFlags | kTxSendFlush | kTxSendFua | kTxSendTrim |
                                        kTxSendWriteZeroes | kTxCanMultiConn | kTxSendCache;

}  // namespace

NbdServer::NbdServer(Store& store, NbdServerOptions options)
    : store_(store), options_(std::move(options)) {}

NbdServer::~NbdServer() { Stop(); }

absl::Status NbdServer::Start() {
  for (const std::string& address : options_.listen) {
    auto listener = std::make_unique<Listener>();
    int fd = -1;
    if (address.starts_with("unix:")) {
      const std::string path = address.substr(5);
      sockaddr_un addr{};
      if (path.size() >= sizeof(addr.sun_path))
        return absl::InvalidArgumentError("unix socket path too long");
      addr.sun_family = AF_UNIX;
      std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
      ::unlink(path.c_str());
      fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
          ::listen(fd, 64) != 0) {
        const int saved = errno;
        if (fd >= 0) ::close(fd);
        return absl::UnavailableError(
            absl::StrCat("cannot listen on ", address, ": ", std::strerror(saved)));
      }
      listener->address = address;
    } else {
      const size_t colon = address.rfind(':');
      uint32_t port = 0;
      if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port) ||
          port > 65535) {
        return absl::InvalidArgumentError(
            absl::StrCat("NBD address \"", address, "\" is not HOST:PORT or unix:PATH"));
      }
      std::string host = address.substr(0, colon);
      if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
      addrinfo hints{};
      hints.ai_family = AF_UNSPEC;
      hints.ai_socktype = SOCK_STREAM;
      hints.ai_flags = AI_PASSIVE | AI_NUMERICHOST;
      addrinfo* res = nullptr;
      if (::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res) != 0) {
        return absl::InvalidArgumentError(absl::StrCat("bad NBD address ", address));
      }
      fd = ::socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
      int one = 1;
      ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
      const bool ok = ::bind(fd, res->ai_addr, res->ai_addrlen) == 0 && ::listen(fd, 64) == 0;
      ::freeaddrinfo(res);
      if (!ok) {
        const int saved = errno;
        ::close(fd);
        return absl::UnavailableError(
            absl::StrCat("cannot listen on ", address, ": ", std::strerror(saved)));
      }
      sockaddr_storage bound{};
      socklen_t len = sizeof(bound);
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len);
      const uint16_t actual =
          ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                            : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
      listener->address = absl::StrCat(address.substr(0, colon), ":", actual);
    }
    listener->fd = fd;
    Listener* raw = listener.get();
    listeners_.push_back(std::move(listener));
    raw->thread = std::thread([this, raw] { AcceptLoop(*raw); });
  }
  return absl::OkStatus();
}

std::vector<std::string> NbdServer::addresses() const {
  std::vector<std::string> out;
  for (const auto& l : listeners_) out.push_back(l->address);
  return out;
}

void NbdServer::Stop() {
  if (stopping_.exchange(true)) return;
  for (auto& l : listeners_) ::shutdown(l->fd, SHUT_RDWR);
  for (auto& l : listeners_) {
    if (l->thread.joinable()) l->thread.join();
    ::close(l->fd);
    if (l->address.starts_with("unix:")) ::unlink(l->address.substr(5).c_str());
  }
  connections_.StopAll();
}

void NbdServer::AcceptLoop(Listener& listener) {
  while (!stopping_.load()) {
    const int fd = ::accept4(listener.fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      return;
    }
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (!connections_.Start(fd, options_.max_connections, [this](int c) { Serve(c); })) ::close(fd);
  }
}

namespace {

// A volume attached for export, found by its id in any region, pinned while the connection
// uses it so it cannot be deleted under the connection.
struct Export {
  std::shared_ptr<Region::VolumePin> pin;
  Volume* volume = nullptr;
  std::string name;
};

std::optional<Export> FindExport(Store& store, const std::string& name) {
  for (const std::string& region_name : store.ListRegions()) {
    absl::StatusOr<Region*> region = store.GetRegion(region_name);
    if (!region.ok()) continue;
    absl::StatusOr<VolumeInfo> info = (*region)->DescribeVolume(name);
    if (!info.ok() || info->attached_to.empty()) continue;
    absl::StatusOr<std::unique_ptr<Region::VolumePin>> pin = (*region)->PinVolume(name);
    if (!pin.ok()) continue;
    Volume* volume = &(*pin)->volume();
    return Export{std::shared_ptr<Region::VolumePin>(std::move(*pin)), volume, name};
  }
  return std::nullopt;
}

class Session {
 public:
  Session(Store& store, int fd) : store_(store), conn_(fd) {}

  void Run() {
    std::optional<Export> chosen = Handshake();
    if (chosen.has_value()) Transmit(*chosen);
  }

 private:
  bool OptionReply(uint32_t option, uint32_t type, const std::string& data = "") {
    std::string out;
    Put(out, kOptionReplyMagic, 8);
    Put(out, option, 4);
    Put(out, type, 4);
    Put(out, data.size(), 4);
    out += data;
    return conn_.Write(out.data(), out.size());
  }

  std::optional<Export> Handshake() {
    std::string hello;
    Put(hello, kNbdMagic, 8);
    Put(hello, kOptionMagic, 8);
    Put(hello, kFlagFixedNewstyle | kFlagNoZeroes, 2);
    if (!conn_.Write(hello.data(), hello.size())) return std::nullopt;
    unsigned char client_flags[4];
    if (!conn_.Read(client_flags, 4)) return std::nullopt;
    const uint32_t flags = static_cast<uint32_t>(Get(client_flags, 4));
    if ((flags & kFlagFixedNewstyle) == 0 ||
        (flags & ~uint32_t{kFlagFixedNewstyle | kFlagNoZeroes}) != 0) {
      return std::nullopt;  // Only fixed newstyle clients.
    }
    const bool no_zeroes = (flags & kFlagNoZeroes) != 0;
    for (int i = 0; i < kMaxOptions; ++i) {
      unsigned char header[16];
      if (!conn_.Read(header, 16) || Get(header, 8) != kOptionMagic) return std::nullopt;
      const uint32_t option = static_cast<uint32_t>(Get(header + 8, 4));
      const uint32_t length = static_cast<uint32_t>(Get(header + 12, 4));
      if (length > kMaxOptionBytes) {
        if (!conn_.Discard(length) || !OptionReply(option, kRepErrInvalid)) return std::nullopt;
        continue;
      }
      std::string data(length, '\0');
      if (!conn_.Read(data.data(), length)) return std::nullopt;
      switch (option) {
        case kOptExportName: {
          std::optional<Export> e = FindExport(store_, data);
          if (!e.has_value()) return std::nullopt;  // This option has no error reply: close.
          std::string out;
          Put(out, e->volume->size_bytes(), 8);
          Put(out, kTransmissionFlags, 2);
          if (!no_zeroes) out.append(124, '\0');
          if (!conn_.Write(out.data(), out.size())) return std::nullopt;
          return e;
        }
        case kOptAbort:
          OptionReply(option, kRepAck);
          return std::nullopt;
        case kOptList: {
          if (length != 0) {
            if (!OptionReply(option, kRepErrInvalid)) return std::nullopt;
            break;
          }
          for (const std::string& name : AttachedVolumes()) {
            std::string entry;
            Put(entry, name.size(), 4);
            entry += name;
            if (!OptionReply(option, kRepServer, entry)) return std::nullopt;
          }
          if (!OptionReply(option, kRepAck)) return std::nullopt;
          break;
        }
        case kOptInfo:
        case kOptGo: {
          std::optional<Export> e;
          const uint32_t status = InfoOrGo(option, data, e);
          if (status == 0) return std::nullopt;  // Write failed.
          if (status == kRepAck && option == kOptGo) return e;
          break;
        }
        case kOptStructuredReply:
          if (length != 0) {
            if (!OptionReply(option, kRepErrInvalid)) return std::nullopt;
            break;
          }
          structured_ = true;
          if (!OptionReply(option, kRepAck)) return std::nullopt;
          break;
        case kOptListMetaContext:
        case kOptSetMetaContext:
          if (!MetaContext(option, data)) return std::nullopt;
          break;
        default:  // STARTTLS and the rest: not yet.
          if (!OptionReply(option, kRepErrUnsup)) return std::nullopt;
      }
    }
    return std::nullopt;  // Too many options.
  }

  // NBD_OPT_LIST_META_CONTEXT / SET_META_CONTEXT: base:allocation is the one context.
  bool MetaContext(uint32_t option, const std::string& data) {
    if (option == kOptSetMetaContext) base_allocation_ = false;  // Replaced even on failure.
    if (!structured_)
      return OptionReply(option, kRepErrInvalid, "negotiate structured replies first");
    const auto* p = reinterpret_cast<const unsigned char*>(data.data());
    size_t at = 0;
    auto need = [&](size_t n) { return data.size() - at >= n; };
    if (!need(4)) return OptionReply(option, kRepErrInvalid);
    const uint32_t name_length = static_cast<uint32_t>(Get(p, 4));
    at = 4;
    if (!need(name_length) || !need(name_length + 4)) return OptionReply(option, kRepErrInvalid);
    const std::string name = data.substr(at, name_length);
    at += name_length;
    const uint32_t queries = static_cast<uint32_t>(Get(p + at, 4));
    at += 4;
    bool match = queries == 0 && option == kOptListMetaContext;
    for (uint32_t i = 0; i < queries; ++i) {
      if (!need(4)) return OptionReply(option, kRepErrInvalid);
      const uint32_t query_length = static_cast<uint32_t>(Get(p + at, 4));
      at += 4;
      if (!need(query_length)) return OptionReply(option, kRepErrInvalid);
      const std::string query = data.substr(at, query_length);
      at += query_length;
      match |= query == kBaseAllocation || (option == kOptListMetaContext && query == "base:");
    }
    if (at != data.size()) return OptionReply(option, kRepErrInvalid);
    if (!FindExport(store_, name).has_value()) return OptionReply(option, kRepErrUnknown);
    if (match) {
      std::string reply;
      Put(reply, option == kOptSetMetaContext ? kBaseAllocationId : 0, 4);
      reply += kBaseAllocation;
      if (!OptionReply(option, kRepMetaContext, reply)) return false;
      if (option == kOptSetMetaContext) {
        base_allocation_ = true;
        meta_export_ = name;
      }
    }
    return OptionReply(option, kRepAck);
  }

  std::vector<std::string> AttachedVolumes() {
    std::vector<std::string> names;
    for (const std::string& region_name : store_.ListRegions()) {
      absl::StatusOr<Region*> region = store_.GetRegion(region_name);
      if (!region.ok()) continue;
      absl::StatusOr<std::vector<VolumeInfo>> volumes = (*region)->ListVolumes();
      if (!volumes.ok()) continue;
      for (const VolumeInfo& v : *volumes) {
        if (!v.attached_to.empty()) names.push_back(v.id);
      }
    }
    return names;
  }

  // Returns the reply type sent (kRepAck on success), or 0 when the connection failed.
  uint32_t InfoOrGo(uint32_t option, const std::string& data, std::optional<Export>& chosen) {
    const auto* p = reinterpret_cast<const unsigned char*>(data.data());
    if (data.size() < 6) return OptionReply(option, kRepErrInvalid) ? kRepErrInvalid : 0;
    const uint32_t name_length = static_cast<uint32_t>(Get(p, 4));
    if (data.size() < 4 + static_cast<size_t>(name_length) + 2) {
      return OptionReply(option, kRepErrInvalid) ? kRepErrInvalid : 0;
    }
    const std::string name = data.substr(4, name_length);
    const uint32_t requests = static_cast<uint32_t>(Get(p + 4 + name_length, 2));
    if (data.size() != 4 + static_cast<size_t>(name_length) + 2 + 2 * requests) {
      return OptionReply(option, kRepErrInvalid) ? kRepErrInvalid : 0;
    }
    chosen = FindExport(store_, name);
    if (!chosen.has_value()) {
      return OptionReply(option, kRepErrUnknown,
                         absl::StrCat("no attached volume named \"", name,
                                      "\": attach it first (AttachVolume)"))
                 ? kRepErrUnknown
                 : 0;
    }
    std::string info;
    Put(info, kInfoExport, 2);
    Put(info, chosen->volume->size_bytes(), 8);
    Put(info, kTransmissionFlags, 2);
    if (!OptionReply(option, kRepInfo, info)) return 0;
    std::string sizes;
    Put(sizes, kInfoBlockSize, 2);
    Put(sizes, kMinBlockBytes, 4);
    Put(sizes, kPreferredBlockBytes, 4);
    Put(sizes, kMaxRequestBytes, 4);
    if (!OptionReply(option, kRepInfo, sizes)) return 0;
    std::string named;
    Put(named, kInfoName, 2);
    named += chosen->name;
    if (!OptionReply(option, kRepInfo, named)) return 0;
    return OptionReply(option, kRepAck) ? kRepAck : 0;
  }

  bool Reply(uint64_t cookie, uint32_t error, std::span<const std::byte> data = {}) {
    std::string out;
    Put(out, kSimpleReplyMagic, 4);
    Put(out, error, 4);
    Put(out, cookie, 8);
    if (error == 0) out.append(reinterpret_cast<const char*>(data.data()), data.size());
    return conn_.Write(out.data(), out.size());
  }

  bool Chunk(uint64_t cookie, uint16_t flags, uint16_t type, const std::string& payload_head,
             std::span<const std::byte> payload_tail = {}) {
    std::string out;
    Put(out, kStructuredReplyMagic, 4);
    Put(out, flags, 2);
    Put(out, type, 2);
    Put(out, cookie, 8);
    Put(out, payload_head.size() + payload_tail.size(), 4);
    out += payload_head;
    return conn_.Write(out.data(), out.size()) &&
           (payload_tail.empty() || conn_.Write(payload_tail.data(), payload_tail.size()));
  }
  bool ErrorChunk(uint64_t cookie, uint32_t error) {
    std::string payload;
    Put(payload, error, 4);
    Put(payload, 0, 2);  // No message.
    return Chunk(cookie, kReplyFlagDone, kReplyTypeError, payload);
  }
  // A READ's reply: simple, or one OFFSET_DATA chunk (or an error chunk) when structured.
  bool ReadReply(const Request& r, const absl::Status& status, std::span<const std::byte> data) {
    if (!structured_) return Reply(r.cookie, status.ok() ? 0 : ToNbdError(status), data);
    if (!status.ok()) return ErrorChunk(r.cookie, ToNbdError(status));
    std::string head;
    Put(head, r.offset, 8);
    return Chunk(r.cookie, kReplyFlagDone, kReplyTypeOffsetData, head, data);
  }
  bool BlockStatus(const Export& e, const Request& r) {
    const size_t max = (r.flags & kCmdFlagReqOne) != 0 ? 1 : kMaxBlockStatusExtents;
    absl::StatusOr<std::vector<AllocationExtent>> map =
        e.volume->Allocation(r.offset, r.length, max);
    if (!map.ok()) return ErrorChunk(r.cookie, ToNbdError(map.status()));
    std::string payload;
    Put(payload, kBaseAllocationId, 4);
    for (const AllocationExtent& x : *map) {
      // Descriptors are 32-bit: a longer run is split (the request length bounds the sum).
      for (uint64_t left = x.length_bytes; left > 0;) {
        const uint64_t piece = std::min<uint64_t>(left, 0x80000000u);
        Put(payload, piece, 4);
        Put(payload, x.zero ? (kStateHole | kStateZero) : 0, 4);
        left -= piece;
      }
    }
    return Chunk(r.cookie, kReplyFlagDone, kReplyTypeBlockStatus, payload);
  }

  void Transmit(const Export& e) {
    std::vector<std::byte> buffer;  // Grows to the largest request, at most kMaxRequestBytes.
    for (;;) {
      std::array<std::byte, kRequestHeaderBytes> header;
      if (!conn_.Read(header.data(), header.size())) return;
      std::variant<Request, RequestError> decoded = DecodeRequest(header);
      if (std::holds_alternative<RequestError>(decoded)) return;  // Bad magic: cannot resync.
      const Request& raw = std::get<Request>(decoded);
      const bool block_status = base_allocation_ && meta_export_ == e.name;
      std::variant<Request, RequestError> checked =
          ValidateRequest(raw, {e.volume->size_bytes(), /*read_only=*/false, block_status});
      if (const RequestError* err = std::get_if<RequestError>(&checked)) {
        // With structured replies a READ's error must be structured too.
        auto send_error = [&] {
          return structured_ && (raw.type == kCmdRead || raw.type == kCmdBlockStatus)
                     ? ErrorChunk(raw.cookie, err->error)
                     : Reply(raw.cookie, err->error);
        };
        if (err->fatal) {
          send_error();
          return;
        }
        if (raw.type == kCmdWrite && !conn_.Discard(raw.length)) return;
        if (!send_error()) return;
        continue;
      }
      const Request& r = std::get<Request>(checked);
      if (r.type == kCmdDisc) return;
      absl::Status status;
      const bool fua = (r.flags & kCmdFlagFua) != 0;
      switch (r.type) {
        case kCmdRead:
          buffer.resize(std::max<size_t>(buffer.size(), r.length));
          status = e.volume->Read(r.offset, std::span(buffer).first(r.length));
          if (!ReadReply(r, status, std::span(buffer).first(r.length))) return;
          continue;
        case kCmdBlockStatus:
          if (!BlockStatus(e, r)) return;
          continue;
        case kCmdWrite:
          buffer.resize(std::max<size_t>(buffer.size(), r.length));
          if (!conn_.Read(buffer.data(), r.length)) return;
          status = e.volume->Write(r.offset, std::span(buffer).first(r.length), fua);
          break;
        case kCmdFlush:
          status = e.volume->Flush();
          break;
        case kCmdTrim:
          status = e.volume->Trim(r.offset, r.length);
          if (status.ok() && fua) status = e.volume->Flush();
          break;
        case kCmdWriteZeroes:
          status = e.volume->WriteZeroes(r.offset, r.length, fua);
          break;
        case kCmdCache:
          break;  // Data is local already.
      }
      if (!Reply(r.cookie, status.ok() ? 0 : ToNbdError(status))) return;
    }
  }

  Store& store_;
  Conn conn_;
  bool structured_ = false;
  bool base_allocation_ = false;  // Selected by NBD_OPT_SET_META_CONTEXT for `meta_export_`.
  std::string meta_export_;
};

}  // namespace

void NbdServer::Serve(int fd) { Session(store_, fd).Run(); }

}  // namespace strata::nbd
