#pragma once
// One NBD connection, start to finish on one thread: the fixed newstyle handshake (with
// STARTTLS, structured replies, extended headers and meta contexts), then the transmission
// phase over the chosen export. Socket-free but for the TLS upgrade, so it can be fuzzed.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "exports.h"
#include "request.h"
#include "tls.h"
#include "transport.h"

namespace strata::nbd {

enum class TlsMode {
  kOff,      // No STARTTLS.
  kOn,       // STARTTLS offered; plaintext clients are served too (and see every export).
  kRequire,  // Everything but STARTTLS and ABORT is refused until the client upgrades.
};

struct SessionOptions {
  TlsContext* tls = nullptr;  // Needed unless tls_mode is kOff.
  TlsMode tls_mode = TlsMode::kOff;
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

  ExportCatalog& catalog_;
  const int fd_;
  Transport* transport_;
  const SessionOptions options_;
  BatchedWriter writer_;
  BufferedReader reader_;
  std::unique_ptr<TlsTransport> tls_;
  std::optional<std::string> account_;  // Set by a TLS upgrade.
  bool no_zeroes_ = false;
  bool structured_ = false;
  bool extended_ = false;
  // Meta contexts chosen by NBD_OPT_SET_META_CONTEXT for `meta_export_`.
  bool want_allocation_ = false;
  bool want_changes_ = false;
  std::string meta_export_;
  std::vector<std::byte> buffer_;  // Request payloads; grows to the largest, then is reused.
};

}  // namespace strata::nbd
