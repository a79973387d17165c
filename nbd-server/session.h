#pragma once
// One NBD connection, start to finish on one thread: the fixed newstyle handshake (with
// STARTTLS, structured replies, extended headers and meta contexts), then the transmission
// phase over the chosen export, an event loop over an io_uring ring: the reads and writes of a
// burst of pipelined requests are queued in the ring and go to the disk in one system call
// when the burst has been parsed, their replies go out in one send, and only then does the
// session wait for more input. Socket-free but for the TLS upgrade, so it can be fuzzed.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "request.h"
#include "strata/export.h"
#include "strata/io_ring.h"
#include "tls.h"
#include "transport.h"

namespace strata::nbd {

enum class TlsMode {
  kOff,      // No STARTTLS.
  kOn,       // STARTTLS offered; plaintext clients are served too (and see every export).
  kRequire,  // Everything but STARTTLS and ABORT is refused until the client upgrades.
};

// Who may open exports.
enum class NbdAuth {
  // Every export needs an account: a TLS upgrade (the PSK identity or the certificate's common
  // name names it) limits the client to that account's exports; a client on the unix socket
  // running as the server's own user (or root) is the operator and may open every export;
  // anyone else is refused until it upgrades (NBD_REP_ERR_TLS_REQD).
  kAccount,
  // Clients that do not authenticate may open every export (trusted hosts, benchmarks).
  kNone,
};

struct SessionOptions {
  TlsContext* tls = nullptr;  // Needed unless tls_mode is kOff.
  TlsMode tls_mode = TlsMode::kOff;
  NbdAuth auth = NbdAuth::kNone;
  // The peer is the operator (NbdAuth::kAccount): the unix socket's peer credentials are the
  // server's own user or root.
  bool operator_peer = false;
  // How long a client may take from connecting to choosing an export (the whole handshake,
  // TLS included); past it the connection ends, so that silent or trickling clients cannot
  // hold the server's connections. Transmission has no timeout (a VM may idle for hours).
  absl::Duration handshake_timeout = absl::InfiniteDuration();
  // The most data a burst of reads holds before their replies go out (a read that would pass
  // it first waits for the others and sends their replies); a single larger read goes alone.
  // So a reply is sent while the bytes its read brought in are still in the processor's cache.
  // Exports whose reads wait on the network (Export::reads_wait_on_network) are not held.
  uint64_t read_burst_bytes = CacheSizedReadBurst();

  // A core's L2 cache (sysconf), or 1 MiB where the system does not say.
  static uint64_t CacheSizedReadBurst();
};

class Session {
 public:
  // `fd` is the socket under `transport` (for the TLS upgrade; -1 when there is none).
  Session(ExportCatalog& catalog, int fd, Transport* transport, const SessionOptions& options);
  ~Session();
  void Run();

 private:
  // Handshake.
  std::unique_ptr<Export> Handshake();
  bool OptionReply(uint32_t option, uint32_t type, absl::string_view data = {});
  bool StartTls(uint32_t option, uint32_t length);
  // Replies to NBD_OPT_INFO / NBD_OPT_GO; sets `chosen` on success. False when the connection
  // failed.
  bool InfoOrGo(uint32_t option, const std::string& data, std::unique_ptr<Export>& chosen);
  bool MetaContext(uint32_t option, const std::string& data);
  uint32_t OpenError(const absl::Status& status) const;
  uint16_t TransmissionFlags(const Export& e) const;

  // Transmission.
  void Transmit(Export& e);
  bool Execute(Export& e, const Request& r);
  bool SendHeader(uint64_t cookie, uint16_t flags, uint16_t type, uint64_t offset,
                  uint64_t payload_length, std::span<const iovec> payload);
  bool Done(const Request& r, const absl::Status& status);
  bool Error(const Request& r, uint32_t error, absl::string_view message = {});
  bool ReadReply(const Request& r, std::span<const std::byte> data);
  bool BlockStatus(Export& e, const Request& r);
  absl::Status WriteZeroes(Export& e, const Request& r);

  // Reads and writes in flight through ring_: at most kMaxInFlight requests and
  // kMaxInFlightBytes of data (a larger one waits for the others), and reads only up to
  // options_.read_burst_bytes unless they wait on the network. Other commands wait for them.
  class InFlight;
  static constexpr unsigned kMaxInFlight = 64;
  static constexpr uint64_t kMaxInFlightBytes = uint64_t{64} << 20;
  // A request's buffer is kept for the next one up to this size (pre-faulted, no allocation).
  static constexpr size_t kKeptBufferBytes = size_t{1} << 20;
  // A free slot with a buffer of r.length bytes; waits for requests in flight when there is
  // none. Null when the ring failed.
  // Charges a read or write to the export's I/O budget (IoLimiter) and waits as long as it
  // says, after answering what is in flight. False: the connection failed meanwhile.
  bool HoldBack(Export& e, const Request& r);
  InFlight* TakeSlot(const Request& r);
  // Whether a write's payload goes from the socket into pipe_ and from there into the volume
  // (Export::WriteSpliced): one copy, by the kernel, where a buffer takes two. Large writes
  // (the saving grows with the payload; a pipe holds at most pipe-max-size, 1 MiB by
  // default) over a plain socket, to an export that takes them; creates pipe_.
  bool SplicesWrite(Export& e, const Request& r);
  static constexpr uint64_t kSplicedWriteBytes = 64 * 1024;
  static constexpr uint64_t kPipeBytes = 1024 * 1024;
  void Release(InFlight& slot);
  // A read or write has finished: its reply waits for the next Drain (a write's, for the
  // next receive).
  void Finished(InFlight& slot);
  // Waits until nothing is in flight, then replies to every finished request. False when the
  // connection failed.
  bool Drain();
  // Replies to the finished writes, while other requests are still running: as many as the
  // writer gathers without sending, then sends what the connection takes without blocking.
  bool AnswerFinishedWrites();
  // Replies to one finished request (gathered by the writer) and frees its slot.
  bool Answer(InFlight& slot, int64_t now_ns);

  ExportCatalog& catalog_;
  const int fd_;
  Transport* transport_;
  const SessionOptions options_;
  BatchedWriter writer_;
  BufferedReader reader_;
  std::unique_ptr<TlsTransport> tls_;
  std::optional<std::string> account_;  // Set by a TLS upgrade.
  // Whether the client must upgrade to TLS before anything but STARTTLS and ABORT: the server
  // requires TLS, or requires an account and the client is not the operator.
  bool MustUpgrade() const;
  bool no_zeroes_ = false;
  bool structured_ = false;
  bool extended_ = false;
  // Meta contexts chosen by NBD_OPT_SET_META_CONTEXT for `meta_export_`.
  bool want_allocation_ = false;
  bool want_changes_ = false;
  std::string meta_export_;
  std::vector<std::unique_ptr<InFlight>> slots_;
  std::vector<InFlight*> free_;
  std::vector<InFlight*> finished_;  // Not answered yet.
  uint64_t in_flight_bytes_ = 0;
  std::unique_ptr<PayloadPipe> pipe_;   // For spliced writes; made by the first.
  bool pipe_refused_ = false;           // The system would not make pipe_.
  std::unique_ptr<IoRing> ring_;        // Created when transmission begins; goes before the slots.
  bool failed_ = false;                 // A reply could not be sent: the connection ends.
  IoLimiter* limiter_ = nullptr;        // The export's, told when each read or write is answered.
  bool reads_wait_on_network_ = false;  // The export's: its reads are not held to a burst.
  // The end of the handshake's time (options_.handshake_timeout from the start), or the
  // infinite future once transmission begins. Enforced by BeforeRecv through SO_RCVTIMEO.
  absl::Time handshake_deadline_ = absl::InfiniteFuture();
  // Runs before each receive: bounds it by the handshake's deadline. With reads or writes
  // running, takes only what has arrived (answering writes as they finish); otherwise first
  // runs what is queued and sends every reply, then blocks.
  BeforeRecv BeforeReceive(bool nothing_arrived);
  int64_t admitted_ns_ = 0;  // When HoldBack admitted the request being started.
};

}  // namespace strata::nbd
