#pragma once
// TLS for NBD's STARTTLS, with OpenSSL: pre-shared keys (the PSK identity names an account) and
// X.509 (the client certificate's common name names the account).

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "transport.h"

typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_st SSL;

namespace strata::nbd {

struct TlsOptions {
  // A PSK file as GnuTLS's psktool writes it: one "identity:hex-key" per line.
  std::string psk_file;
  // Keys not in the file: the key for an identity, if it has one (the accounts' derived keys,
  // strata/export.h DeriveNbdKey). Called during handshakes, from any thread.
  std::function<std::optional<std::string>(const std::string& identity)> psk_lookup;
  // A directory as QEMU's tls-creds-x509 reads it: ca-cert.pem, server-cert.pem,
  // server-key.pem. Clients must present a certificate signed by the CA.
  std::string x509_dir;
};

// A TLS connection over a socket; does not own the descriptor.
class TlsTransport final : public Transport {
 public:
  TlsTransport(SSL* ssl, std::string peer_identity);
  ~TlsTransport() override;
  ssize_t Recv(void* buf, size_t n, RecvWait wait) override;
  bool Send(std::span<const iovec> pieces) override;
  // The PSK identity, or the client certificate's common name.
  const std::string& peer_identity() const { return peer_identity_; }

 private:
  SSL* const ssl_;
  const std::string peer_identity_;
};

// Thread-safe once created.
class TlsContext {
 public:
  // Loads the credentials; an unreadable or malformed file is an error naming it.
  static absl::StatusOr<std::unique_ptr<TlsContext>> Create(const TlsOptions& options);
  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  // Runs the server side of the handshake on `fd`.
  absl::StatusOr<std::unique_ptr<TlsTransport>> Accept(int fd);

 private:
  TlsContext() = default;
  static int ChooseMode(SSL* ssl, int* alert, void* arg);
  static unsigned int FindPsk(SSL* ssl, const char* identity, unsigned char* psk,
                              unsigned int max_psk_len);

  SSL_CTX* ctx_ = nullptr;
  std::map<std::string, std::string> psks_;  // Identity to key bytes; wiped on destruction.
  std::function<std::optional<std::string>(const std::string&)> psk_lookup_;
};

}  // namespace strata::nbd
