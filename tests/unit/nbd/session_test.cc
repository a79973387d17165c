// Session's bursts of reads: pipelined reads are gathered, and their replies go out together,
// only up to SessionOptions::read_burst_bytes of data; a read past it first sends the replies
// before it, so that each reply leaves while its bytes are still in the processor's cache.
// Reads that wait on the network are not held.
// And the session's work beside its client: while writes run on the ring's helpers, the
// session takes the next request that has arrived, and it blocks on the client only with
// nothing running and every reply sent.
// Large writes over a plain socket are spliced into the export through a pipe, and taken
// through the buffer when the export declines them or the pipe fills.
// Played over a transport in memory (or a socket pair) against exports in memory.

#include "nbd-server/session.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "nbd-server/protocol.h"
#include "strata/export.h"
#include "strata/io_ring.h"
#include "strata/volume.h"

namespace strata::nbd {
namespace {

// Room for two reads of half the largest default burst (TheDefaultBurstHoldsSessions).
constexpr uint64_t kExportBytes = uint64_t{128} << 20;
constexpr size_t kReplyHeaderBytes = 16;

char PatternAt(uint64_t offset) { return static_cast<char>((offset * 131 + offset / 4096) % 251); }

// The client's bytes in; the server's bytes kept. The client's bytes come in parts: a
// receive without waiting takes only what has arrived, and a receive that waits first runs
// `on_wait`, then lets the next part arrive (by default all arrive at once). With
// `part_per_receive`, every part has arrived at the start, but a receive takes at most the
// rest of one part (as a client's requests that came in separate segments).
class MemoryTransport final : public Transport {
 public:
  explicit MemoryTransport(std::string client, std::vector<size_t> part_ends = {},
                           bool part_per_receive = false)
      : client_(std::move(client)),
        part_ends_(std::move(part_ends)),
        part_per_receive_(part_per_receive) {
    part_ends_.push_back(client_.size());
    arrived_ = part_per_receive_ ? client_.size() : part_ends_.front();
  }
  ssize_t Recv(void* buf, size_t n, RecvWait) override {
    if (on_wait != nullptr) on_wait();
    if (at_ == arrived_) {
      for (const size_t end : part_ends_) {
        if (end > arrived_) {
          arrived_ = end;
          break;
        }
      }
    }
    return Take(buf, n);
  }
  std::optional<ssize_t> TryRecv(void* buf, size_t n) override {
    if (at_ == arrived_ && at_ < client_.size()) return std::nullopt;
    return Take(buf, n);
  }
  bool Send(std::span<const iovec> pieces) override {
    for (const iovec& p : pieces) sent.append(static_cast<const char*>(p.iov_base), p.iov_len);
    return true;
  }
  std::string sent;
  std::function<void()> on_wait;

 private:
  ssize_t Take(void* buf, size_t n) {
    n = std::min(n, arrived_ - at_);
    if (part_per_receive_) {
      for (const size_t end : part_ends_) {
        if (end > at_) {
          n = std::min(n, end - at_);
          break;
        }
      }
    }
    std::memcpy(buf, client_.data() + at_, n);
    at_ += n;
    return static_cast<ssize_t>(n);
  }
  std::string client_;
  std::vector<size_t> part_ends_;
  const bool part_per_receive_;
  size_t arrived_ = 0;
  size_t at_ = 0;
};

// An export in memory named "pattern", of kExportBytes, whose other commands do nothing.
class MemoryExport : public Export {
 public:
  const std::string& name() const override { return name_; }
  std::string description() const override { return ""; }
  uint64_t size_bytes() const override { return kExportBytes; }
  bool is_volume() const override { return false; }
  absl::Status Trim(uint64_t, uint64_t) override { return absl::OkStatus(); }
  absl::Status WriteZeroes(uint64_t, uint64_t, bool) override { return absl::OkStatus(); }
  absl::Status Flush() override { return absl::OkStatus(); }
  absl::Status Resize(uint64_t) override { return absl::PermissionDeniedError(""); }
  absl::StatusOr<std::vector<AllocationExtent>> Allocation(uint64_t, uint64_t, size_t) override {
    return absl::UnimplementedError("");
  }
  absl::StatusOr<std::vector<ChangeExtent>> Changes(uint64_t, uint64_t, size_t) override {
    return absl::UnimplementedError("");
  }

 private:
  const std::string name_ = "pattern";
};

// Bytes of PatternAt; each Read records how much the server had sent when it ran.
class PatternExport final : public MemoryExport {
 public:
  PatternExport(const MemoryTransport& transport, std::vector<size_t>& sent_at_reads, bool remote)
      : transport_(transport), sent_at_reads_(sent_at_reads), remote_(remote) {}
  bool reads_wait_on_network() const override { return remote_; }
  bool read_only() const override { return true; }
  // Runs on the ring's helper threads when `remote` (Export::SubmitRead).
  absl::Status Read(uint64_t offset, std::span<std::byte> out) override {
    {
      absl::MutexLock lock(&mu_);
      sent_at_reads_.push_back(transport_.sent.size());
    }
    for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<std::byte>(PatternAt(offset + i));
    return absl::OkStatus();
  }
  absl::Status Write(uint64_t, std::span<const std::byte>, bool) override {
    return absl::PermissionDeniedError("read-only");
  }

 private:
  const MemoryTransport& transport_;
  absl::Mutex mu_;
  std::vector<size_t>& sent_at_reads_;
  const bool remote_;
};

class PatternCatalog final : public ExportCatalog {
 public:
  PatternCatalog(const MemoryTransport& transport, std::vector<size_t>& sent_at_reads, bool remote)
      : transport_(transport), sent_at_reads_(sent_at_reads), remote_(remote) {}
  absl::StatusOr<std::unique_ptr<Export>> Open(const std::string& name,
                                               const std::optional<std::string>&) override {
    if (name != "pattern") return absl::NotFoundError(name);
    return std::make_unique<PatternExport>(transport_, sent_at_reads_, remote_);
  }
  std::vector<std::string> List(const std::optional<std::string>&) override { return {"pattern"}; }
  std::optional<std::string> AccountFor(const std::string&) override { return std::nullopt; }
  std::optional<std::string> NbdKeyFor(const std::string&) override { return std::nullopt; }

 private:
  const MemoryTransport& transport_;
  std::vector<size_t>& sent_at_reads_;
  const bool remote_;
};

void Put(std::string& out, uint64_t value, int width) {
  for (int i = width - 1; i >= 0; --i) out.push_back(static_cast<char>(value >> (8 * i)));
}

// A client that opens "pattern" with NBD_OPT_EXPORT_NAME (no zero padding), sends a READ of
// each (offset, length) back to back without waiting, then disconnects.
std::string PipelinedReads(const std::vector<std::pair<uint64_t, uint32_t>>& reads) {
  std::string c;
  Put(c, kFlagFixedNewstyle | kFlagNoZeroes, 4);
  Put(c, kOptionMagic, 8);
  Put(c, kOptExportName, 4);
  Put(c, 7, 4);
  c += "pattern";
  uint64_t cookie = 1;
  for (const auto& [offset, length] : reads) {
    Put(c, kRequestMagic, 4);
    Put(c, 0, 2);
    Put(c, kCmdRead, 2);
    Put(c, cookie++, 8);
    Put(c, offset, 8);
    Put(c, length, 4);
  }
  Put(c, kRequestMagic, 4);
  Put(c, 0, 2);
  Put(c, kCmdDisc, 2);
  Put(c, cookie, 8);
  Put(c, 0, 8);
  Put(c, 0, 4);
  return c;
}

// Runs a session over `reads` with `burst_bytes` (nullopt: SessionOptions' default), on an export
// whose reads wait on the network when `remote`: how many bytes of replies the server had sent when
// each read ran, and the server's stream after the handshake.
struct Played {
  std::vector<size_t> sent_at_reads;
  std::string replies;
};
Played Play(const std::vector<std::pair<uint64_t, uint32_t>>& reads,
            std::optional<uint64_t> burst_bytes, bool remote = false) {
  MemoryTransport transport(PipelinedReads(reads));
  Played played;
  PatternCatalog catalog(transport, played.sent_at_reads, remote);
  SessionOptions options;
  if (burst_bytes.has_value()) options.read_burst_bytes = *burst_bytes;
  Session(catalog, -1, &transport, options).Run();
  // The handshake: the greeting (18 bytes), then the export's size and flags (10).
  constexpr size_t kHandshakeBytes = 18 + 10;
  EXPECT_GE(transport.sent.size(), kHandshakeBytes);
  played.replies = transport.sent.substr(kHandshakeBytes);
  // The handshake's last reply may still be gathered with the first replies (BatchedWriter).
  for (size_t& at : played.sent_at_reads) at = at > kHandshakeBytes ? at - kHandshakeBytes : 0;
  return played;
}

uint64_t Get(const std::string& bytes, size_t at, int width) {
  uint64_t v = 0;
  for (int i = 0; i < width; ++i) v = (v << 8) | static_cast<uint8_t>(bytes[at + i]);
  return v;
}

// Whether `replies` holds one simple reply for each read (the cookie of read i is i + 1), with
// its bytes. Replies may come in any order (reads on the ring's helpers finish in any order).
void ExpectReplies(const std::string& replies,
                   const std::vector<std::pair<uint64_t, uint32_t>>& reads) {
  std::vector<bool> answered(reads.size(), false);
  size_t at = 0;
  while (at < replies.size()) {
    ASSERT_GE(replies.size(), at + kReplyHeaderBytes);
    ASSERT_EQ(Get(replies, at, 4), kSimpleReplyMagic);
    ASSERT_EQ(Get(replies, at + 4, 4), 0u) << "an error reply";
    const uint64_t cookie = Get(replies, at + 8, 8);
    ASSERT_GE(cookie, 1u);
    ASSERT_LE(cookie, reads.size());
    ASSERT_FALSE(answered[cookie - 1]) << "two replies to read " << cookie;
    answered[cookie - 1] = true;
    at += kReplyHeaderBytes;
    const auto [offset, length] = reads[cookie - 1];
    ASSERT_GE(replies.size(), at + length);
    for (uint32_t i = 0; i < length; ++i) {
      ASSERT_EQ(replies[at + i], PatternAt(offset + i)) << "byte " << offset + i;
    }
    at += length;
  }
  for (size_t i = 0; i < reads.size(); ++i)
    EXPECT_TRUE(answered[i]) << "no reply to read " << i + 1;
}

TEST(SessionReadBurstTest, AReadPastTheBurstFirstSendsTheRepliesBeforeIt) {
  const std::vector<std::pair<uint64_t, uint32_t>> reads = {
      {0, 1 << 20}, {1 << 20, 1 << 20}, {3 << 20, 1 << 20}};
  const Played played = Play(reads, uint64_t{1} << 20);
  ExpectReplies(played.replies, reads);
  // Each 1 MiB read ran after the replies to the reads before it had gone out.
  ASSERT_EQ(played.sent_at_reads.size(), 3u);
  EXPECT_EQ(played.sent_at_reads[0], 0u);
  EXPECT_EQ(played.sent_at_reads[1], kReplyHeaderBytes + (1 << 20));
  EXPECT_EQ(played.sent_at_reads[2], 2 * (kReplyHeaderBytes + (1 << 20)));
}

TEST(SessionReadBurstTest, ReadsWithinTheBurstShareOneSend) {
  std::vector<std::pair<uint64_t, uint32_t>> reads;
  for (uint64_t i = 0; i < 16; ++i) reads.emplace_back(i * 65536, 65536);  // 1 MiB in all.
  const Played played = Play(reads, uint64_t{1} << 20);
  ExpectReplies(played.replies, reads);
  // All sixteen ran before any reply went out.
  ASSERT_EQ(played.sent_at_reads.size(), 16u);
  for (const size_t at : played.sent_at_reads) EXPECT_EQ(at, 0u);
}

TEST(SessionReadBurstTest, TheBurstEndsWhereTheNextReadWouldPassIt) {
  // 768 KiB in flight, then 512 KiB: the third read waits for the replies to the first two.
  const std::vector<std::pair<uint64_t, uint32_t>> reads = {
      {0, 512 << 10}, {512 << 10, 256 << 10}, {1 << 20, 512 << 10}, {2 << 20, 4096}};
  const Played played = Play(reads, uint64_t{1} << 20);
  ExpectReplies(played.replies, reads);
  ASSERT_EQ(played.sent_at_reads.size(), 4u);
  EXPECT_EQ(played.sent_at_reads[1], 0u);
  const size_t first_two = 2 * kReplyHeaderBytes + (768 << 10);
  EXPECT_EQ(played.sent_at_reads[2], first_two);
  EXPECT_EQ(played.sent_at_reads[3], first_two);  // 516 KiB: still within the burst.
}

TEST(SessionReadBurstTest, ReadsThatWaitOnTheNetworkAreNotHeld) {
  // A volume on RADOS: several reads in flight hide the cluster's latency, whatever their size.
  const std::vector<std::pair<uint64_t, uint32_t>> reads = {
      {0, 1 << 20}, {1 << 20, 1 << 20}, {3 << 20, 1 << 20}};
  const Played played = Play(reads, uint64_t{1} << 20, /*remote=*/true);
  ExpectReplies(played.replies, reads);
  ASSERT_EQ(played.sent_at_reads.size(), 3u);
  for (const size_t at : played.sent_at_reads) EXPECT_EQ(at, 0u);
}

TEST(SessionReadBurstTest, TheDefaultBurstHoldsSessions) {
  // The default (a core's L2 cache) is a cache's size, and a session left at it holds reads to
  // it: two reads of just over half of it cannot share a burst.
  const uint64_t burst = SessionOptions{}.read_burst_bytes;
  ASSERT_GE(burst, uint64_t{256} << 10);
  ASSERT_LE(burst, uint64_t{64} << 20);
  const uint32_t half = static_cast<uint32_t>(burst / 2 + 4096);
  const std::vector<std::pair<uint64_t, uint32_t>> reads = {{0, half}, {half, half}};
  const Played played = Play(reads, std::nullopt);
  ExpectReplies(played.replies, reads);
  ASSERT_EQ(played.sent_at_reads.size(), 2u);
  EXPECT_EQ(played.sent_at_reads[1], kReplyHeaderBytes + half);
}

// Writes that run on the ring's helpers, as a large enciphered write to a volume does: each
// takes `work`. With `wait_for_next`, write i then waits there until the session has started
// write i + 1 (the last, not at all), for at most kPatience: it finishes well only if the
// session takes the next request while it runs.
// Reads are queued in the ring, as a volume's are: reads of /dev/zero, started by a wait.
// Each SubmitWrite records in `sent_at_writes` how many bytes the server had sent when it ran.
// The session owns the export (and ends it with the connection).
class HelperWriteExport final : public MemoryExport, public VolumeIo::Completer {
 public:
  static constexpr absl::Duration kPatience = absl::Seconds(2);
  HelperWriteExport(bool wait_for_next, int writes, absl::Duration work,
                    const MemoryTransport* transport = nullptr,
                    std::vector<size_t>* sent_at_writes = nullptr)
      : wait_for_next_(wait_for_next),
        writes_(writes),
        work_(work),
        transport_(transport),
        sent_at_writes_(sent_at_writes) {}
  ~HelperWriteExport() override {
    if (zero_fd_ >= 0) ::close(zero_fd_);
  }
  void SubmitRead(uint64_t, std::span<std::byte> out, IoRing& ring, VolumeIo& io) override {
    io.completer = this;
    io.buffer = out;
    if (!ring.QueueRead(zero_fd_, out, 0, &io)) io.Done(absl::ResourceExhaustedError("full"));
  }
  void Complete(VolumeIo& io, int result) override {
    io.Done(result == static_cast<int>(io.buffer.size()) ? absl::OkStatus()
                                                         : absl::DataLossError("short read"));
  }
  bool read_only() const override { return false; }
  absl::Status Read(uint64_t, std::span<std::byte>) override { return absl::OkStatus(); }
  absl::Status Write(uint64_t, std::span<const std::byte>, bool) override {
    return absl::InternalError("not through the ring");
  }
  void SubmitWrite(uint64_t, std::span<std::byte>, bool, IoRing& ring, VolumeIo& io) override {
    if (sent_at_writes_ != nullptr) sent_at_writes_->push_back(transport_->sent.size());
    int index = 0;
    {
      absl::MutexLock lock(&mu_);
      index = started_++;
    }
    const bool queued = ring.QueueCall(
        [this, index]() -> absl::Status {
          absl::SleepFor(work_);
          if (!wait_for_next_ || index + 1 == writes_) return absl::OkStatus();
          absl::MutexLock lock(&mu_);
          const auto next_started = [this, index]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
            return started_ > index + 1;
          };
          if (!mu_.AwaitWithTimeout(absl::Condition(&next_started), kPatience)) {
            return absl::DeadlineExceededError("the next write was not taken meanwhile");
          }
          return absl::OkStatus();
        },
        [&io](absl::Status s) { io.Done(std::move(s)); });
    if (!queued) io.Done(absl::ResourceExhaustedError("ring full"));
  }
  int started() {
    absl::MutexLock lock(&mu_);
    return started_;
  }

 private:
  const bool wait_for_next_;
  const int writes_;
  const absl::Duration work_;
  const MemoryTransport* transport_;
  std::vector<size_t>* sent_at_writes_;
  const int zero_fd_ = ::open("/dev/zero", O_RDONLY | O_CLOEXEC);
  absl::Mutex mu_;
  int started_ ABSL_GUARDED_BY(mu_) = 0;
};

class OneExportCatalog final : public ExportCatalog {
 public:
  explicit OneExportCatalog(Export* e) : export_(e) {}
  absl::StatusOr<std::unique_ptr<Export>> Open(const std::string& name,
                                               const std::optional<std::string>&) override {
    if (name != "pattern" || export_ == nullptr) return absl::NotFoundError(name);
    return std::unique_ptr<Export>(std::exchange(export_, nullptr));
  }
  std::vector<std::string> List(const std::optional<std::string>&) override { return {"pattern"}; }
  std::optional<std::string> AccountFor(const std::string&) override { return std::nullopt; }
  std::optional<std::string> NbdKeyFor(const std::string&) override { return std::nullopt; }

 private:
  Export* export_;  // Handed to the session when opened.
};

constexpr size_t kOpenBytes = 4 + 8 + 4 + 4 + 7;  // Flags, then NBD_OPT_EXPORT_NAME "pattern".
constexpr size_t kWriteBytes = 64 << 10;
constexpr size_t kRequestBytes = 28;

// A client that opens "pattern", sends `writes` WRITEs of `write_bytes` back to back (request
// i + 1 a 4 KiB READ instead when `read_at` is i), each filled with the byte i, then
// disconnects.
std::string PipelinedWrites(int writes, int read_at = -1, size_t write_bytes = kWriteBytes) {
  std::string c = PipelinedReads({});
  c.resize(kOpenBytes);  // The open, without the disconnect.
  for (int i = 0; i < writes; ++i) {
    Put(c, kRequestMagic, 4);
    Put(c, 0, 2);
    Put(c, i == read_at ? kCmdRead : kCmdWrite, 2);
    Put(c, i + 1, 8);
    Put(c, static_cast<uint64_t>(i) * write_bytes, 8);
    Put(c, i == read_at ? 4096 : write_bytes, 4);
    if (i != read_at) c.append(write_bytes, static_cast<char>(i));
  }
  Put(c, kRequestMagic, 4);
  Put(c, 0, 2);
  Put(c, kCmdDisc, 2);
  Put(c, writes + 1, 8);
  Put(c, 0, 8);
  Put(c, 0, 4);
  return c;
}

// The simple replies in `replies`: how many, and whether each was a success, by cookie.
std::vector<int> WriteReplyErrors(const std::string& replies, int writes) {
  std::vector<int> errors(writes, -1);  // -1: no reply.
  for (size_t at = 0; at + kReplyHeaderBytes <= replies.size(); at += kReplyHeaderBytes) {
    EXPECT_EQ(Get(replies, at, 4), kSimpleReplyMagic);
    const uint64_t cookie = Get(replies, at + 8, 8);
    if (cookie >= 1 && cookie <= static_cast<uint64_t>(writes)) {
      EXPECT_EQ(errors[cookie - 1], -1) << "two replies to write " << cookie;
      errors[cookie - 1] = static_cast<int>(Get(replies, at + 4, 4));
    }
  }
  return errors;
}

TEST(SessionBesideTheClientTest, TheNextRequestIsTakenWhileWritesRun) {
  constexpr int kWrites = 4;
  MemoryTransport transport(PipelinedWrites(kWrites));  // Every request has arrived.
  auto* e = new HelperWriteExport(/*wait_for_next=*/true, kWrites, absl::ZeroDuration());
  OneExportCatalog catalog(e);
  Session(catalog, -1, &transport, SessionOptions{}).Run();
  constexpr size_t kHandshakeBytes = 18 + 10;
  ASSERT_GE(transport.sent.size(), kHandshakeBytes);
  // A session that waited for each write before it read the next would fail each of them
  // (after kPatience).
  EXPECT_EQ(WriteReplyErrors(transport.sent.substr(kHandshakeBytes), kWrites),
            std::vector<int>(kWrites, 0));
}

TEST(SessionBesideTheClientTest, TheSessionWaitsForTheClientOnlyWithEveryWriteAnswered) {
  // Each request arrives only when the session waits for it. A write takes 20 ms on a helper;
  // when the session waits for the client, every write it started must have been answered (a
  // snapshot may wait for a running write to land, and a client at queue depth 1 waits for
  // its reply).
  constexpr int kWrites = 3;
  std::vector<size_t> part_ends;
  for (int i = 0; i <= kWrites; ++i)
    part_ends.push_back(kOpenBytes + i * (kRequestBytes + kWriteBytes));
  MemoryTransport transport(PipelinedWrites(kWrites), part_ends);
  auto* e = new HelperWriteExport(/*wait_for_next=*/false, kWrites, absl::Milliseconds(20));
  std::vector<std::pair<int, int>> at_waits;  // (writes started, writes answered)
  transport.on_wait = [&] {
    constexpr size_t kHandshakeBytes = 18 + 10;
    const std::string replies =
        transport.sent.size() > kHandshakeBytes ? transport.sent.substr(kHandshakeBytes) : "";
    at_waits.emplace_back(e->started(), static_cast<int>(replies.size() / kReplyHeaderBytes));
  };
  OneExportCatalog catalog(e);
  Session(catalog, -1, &transport, SessionOptions{}).Run();
  ASSERT_FALSE(at_waits.empty());
  int most_started = 0;
  for (const auto& [started, answered] : at_waits) {
    EXPECT_EQ(answered, started) << "the session waited with a write unanswered";
    most_started = std::max(most_started, started);
  }
  EXPECT_EQ(most_started, kWrites);
}

TEST(SessionBesideTheClientTest, AQueuedReadIsAnsweredBeforeTheNextRequestIsTaken) {
  // Write 1 runs 50 ms on a helper; read 2 is queued in the ring behind it (only a wait starts
  // it). The session must not go on taking writes 3 and 4 with the read unstarted: the read's
  // reply is out before write 3 begins.
  constexpr int kRequests = 4;
  // Each request comes in a receive of its own (the reader finds none buffered).
  std::vector<size_t> part_ends = {kOpenBytes};
  for (int i = 0; i < kRequests; ++i) {
    part_ends.push_back(part_ends.back() + kRequestBytes + (i == 1 ? 0 : kWriteBytes));
  }
  MemoryTransport transport(PipelinedWrites(kRequests, /*read_at=*/1), part_ends,
                            /*part_per_receive=*/true);
  std::vector<size_t> sent_at_writes;
  OneExportCatalog catalog(new HelperWriteExport(
      /*wait_for_next=*/false, kRequests, absl::Milliseconds(50), &transport, &sent_at_writes));
  Session(catalog, -1, &transport, SessionOptions{}).Run();
  constexpr size_t kHandshakeBytes = 18 + 10;
  ASSERT_EQ(sent_at_writes.size(), 3u);
  const size_t read_reply = kReplyHeaderBytes + 4096;
  EXPECT_GE(sent_at_writes[1], kHandshakeBytes + kReplyHeaderBytes + read_reply);
  // Every request answered: three writes and the read.
  EXPECT_EQ(transport.sent.size(), kHandshakeBytes + 3 * kReplyHeaderBytes + read_reply);
}

// What a SplicingExport saw; outlives the export, which the session owns.
struct SpliceRecord {
  std::string bytes = std::string(kExportBytes, '\0');
  int asked = 0;     // SplicesWrite calls.
  int spliced = 0;   // Writes taken from the pipe.
  int buffered = 0;  // Writes taken through Write (the buffer).
};

// An export in memory that takes spliced writes (reading the pipe), unless it `declines` them
// in WriteSpliced after SplicesWrite said it would.
class SplicingExport final : public MemoryExport {
 public:
  SplicingExport(SpliceRecord& record, bool declines) : record_(record), declines_(declines) {}
  bool read_only() const override { return false; }
  absl::Status Read(uint64_t offset, std::span<std::byte> out) override {
    std::memcpy(out.data(), record_.bytes.data() + offset, out.size());
    return absl::OkStatus();
  }
  absl::Status Write(uint64_t offset, std::span<const std::byte> data, bool) override {
    std::memcpy(record_.bytes.data() + offset, data.data(), data.size());
    ++record_.buffered;
    return absl::OkStatus();
  }
  bool SplicesWrite(uint64_t, uint64_t) override {
    ++record_.asked;
    return true;
  }
  std::optional<absl::Status> WriteSpliced(uint64_t offset, int pipe_fd, uint64_t length) override {
    if (declines_) return std::nullopt;
    for (uint64_t done = 0; done < length;) {
      const ssize_t got = ::read(pipe_fd, record_.bytes.data() + offset + done, length - done);
      if (got <= 0) return absl::DataLossError("the pipe held less than the payload");
      done += static_cast<uint64_t>(got);
    }
    ++record_.spliced;
    return absl::OkStatus();
  }

 private:
  SpliceRecord& record_;
  const bool declines_;
};

// Runs a session over a unix socket pair against a SplicingExport: the client sends
// PipelinedWrites(writes, -1, write_bytes) in pieces of `piece` bytes, and the replies come
// back.
std::string PlayOverASocket(SpliceRecord& record, bool declines, int writes, size_t write_bytes,
                            size_t piece, size_t sent_bytes = std::string::npos) {
  int fds[2];
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  // The client's stream, or its first `sent_bytes` (then it hangs up).
  const std::string client = PipelinedWrites(writes, -1, write_bytes).substr(0, sent_bytes);
  std::thread server([&] {
    SocketTransport transport(fds[0]);
    OneExportCatalog catalog(new SplicingExport(record, declines));
    Session(catalog, fds[0], &transport, SessionOptions{}).Run();
    ::shutdown(fds[0], SHUT_RDWR);
  });
  std::thread sender([&] {
    for (size_t at = 0; at < client.size(); at += piece) {
      const size_t len = std::min(piece, client.size() - at);
      if (::send(fds[1], client.data() + at, len, MSG_NOSIGNAL) != static_cast<ssize_t>(len)) {
        break;
      }
    }
    ::shutdown(fds[1], SHUT_WR);
  });
  std::string received;
  char buf[4096];
  for (ssize_t got; (got = ::recv(fds[1], buf, sizeof(buf), 0)) > 0;) {
    received.append(buf, static_cast<size_t>(got));
  }
  sender.join();
  server.join();
  ::close(fds[0]);
  ::close(fds[1]);
  constexpr size_t kHandshakeBytes = 18 + 10;
  EXPECT_GE(received.size(), kHandshakeBytes);
  return received.size() < kHandshakeBytes ? "" : received.substr(kHandshakeBytes);
}

void ExpectWritten(const SpliceRecord& record, int writes, size_t write_bytes) {
  for (int i = 0; i < writes; ++i) {
    EXPECT_EQ(record.bytes.substr(i * write_bytes, write_bytes),
              std::string(write_bytes, static_cast<char>(i)))
        << "write " << i;
  }
}

// PlayOverASocket, then checks that every write succeeded and landed; returns what the export
// saw.
SpliceRecord PlayWrites(bool declines, int writes, size_t write_bytes, size_t piece) {
  SpliceRecord record;
  const std::string replies = PlayOverASocket(record, declines, writes, write_bytes, piece);
  EXPECT_EQ(WriteReplyErrors(replies, writes), std::vector<int>(writes, 0));
  ExpectWritten(record, writes, write_bytes);
  return record;
}

TEST(SessionSpliceTest, LargeWritesOverASocketAreSplicedIntoTheExport) {
  constexpr int kWrites = 6;
  const SpliceRecord record =
      PlayWrites(/*declines=*/false, kWrites, 1 << 20, /*piece=*/256 * 1024);
  EXPECT_EQ(record.spliced, kWrites);
  EXPECT_EQ(record.buffered, 0);
}

TEST(SessionSpliceTest, WritesBelowTheThresholdAreNotOffered) {
  constexpr int kWrites = 4;
  const SpliceRecord record = PlayWrites(/*declines=*/false, kWrites, 60 * 1024, /*piece=*/1 << 20);
  EXPECT_EQ(record.asked, 0);
  EXPECT_EQ(record.buffered, kWrites);
}

TEST(SessionSpliceTest, AWriteTheExportDeclinesIsReadOutOfThePipe) {
  constexpr int kWrites = 4;
  const SpliceRecord record =
      PlayWrites(/*declines=*/true, kWrites, 512 * 1024, /*piece=*/100 * 1024);
  EXPECT_EQ(record.asked, kWrites);
  EXPECT_EQ(record.spliced, 0);
  EXPECT_EQ(record.buffered, kWrites);
}

TEST(SessionSpliceTest, WhenThePipeFillsThePayloadIsTakenThroughTheBuffer) {
  // Sent 512 bytes at a time, each piece takes a slot of the pipe: 256 KiB do not fit.
  constexpr int kWrites = 3;
  const SpliceRecord record = PlayWrites(/*declines=*/false, kWrites, 256 * 1024, /*piece=*/512);
  EXPECT_EQ(record.asked, kWrites);
  // The first payload may come partly with the first headers, buffered, and fit; the next
  // ones are spliced whole (only their headers are received) and fill the pipe.
  EXPECT_GE(record.buffered, kWrites - 1);
  EXPECT_EQ(record.spliced + record.buffered, kWrites);
}

TEST(SessionSpliceTest, AClientThatHangsUpMidPayloadHasNothingWritten) {
  // Two 1 MiB writes (the second filled with the byte 1); the client hangs up halfway through
  // the second's payload.
  constexpr size_t kMiB = 1 << 20;
  SpliceRecord record;
  const std::string replies =
      PlayOverASocket(record, /*declines=*/false, 2, kMiB, /*piece=*/64 * 1024,
                      kOpenBytes + 2 * kRequestBytes + kMiB + kMiB / 2);
  EXPECT_EQ(record.asked, 2);    // Both were to be spliced...
  EXPECT_EQ(record.spliced, 1);  // ...but the volume never saw the second.
  EXPECT_EQ(record.buffered, 0);
  EXPECT_EQ(record.bytes.substr(kMiB, kMiB), std::string(kMiB, '\0'));
  EXPECT_EQ(WriteReplyErrors(replies, 2), (std::vector<int>{0, -1}));
}

TEST(SessionSpliceTest, ATransportThatCannotSpliceNeverOffers) {
  // A transport in memory (as TLS: its bytes are not a socket's).
  constexpr int kWrites = 3;
  MemoryTransport transport(PipelinedWrites(kWrites, -1, 1 << 20));
  SpliceRecord record;
  OneExportCatalog catalog(new SplicingExport(record, /*declines=*/false));
  Session(catalog, -1, &transport, SessionOptions{}).Run();
  ExpectWritten(record, kWrites, 1 << 20);
  EXPECT_EQ(record.asked, 0);
  EXPECT_EQ(record.buffered, kWrites);
}

}  // namespace
}  // namespace strata::nbd
