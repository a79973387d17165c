#include "tls.h"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "strata/psk_file.h"

namespace strata::nbd {
namespace {

std::string OpenSslError() {
  const unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "unknown TLS error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof(buf));
  return buf;
}

}  // namespace

TlsTransport::TlsTransport(SSL* ssl, std::string peer_identity)
    : ssl_(ssl), peer_identity_(std::move(peer_identity)) {}

TlsTransport::~TlsTransport() {
  SSL_shutdown(ssl_);
  SSL_free(ssl_);
}

ssize_t TlsTransport::Recv(void* buf, size_t n, RecvWait /*wait*/) {
  const int got = SSL_read(ssl_, buf, static_cast<int>(std::min<size_t>(n, 1 << 30)));
  if (got > 0) return got;
  return SSL_get_error(ssl_, got) == SSL_ERROR_ZERO_RETURN ? 0 : -1;
}

bool TlsTransport::Send(std::span<const iovec> pieces) {
  for (const iovec& p : pieces) {
    if (p.iov_len == 0) continue;
    if (SSL_write(ssl_, p.iov_base, static_cast<int>(p.iov_len)) <= 0) return false;
  }
  return true;
}

absl::StatusOr<std::unique_ptr<TlsContext>> TlsContext::Create(const TlsOptions& options) {
  const bool psk = !options.psk_file.empty() || options.psk_lookup != nullptr;
  if (!psk && options.x509_dir.empty()) {
    return absl::InvalidArgumentError("TLS needs pre-shared keys or an X.509 directory");
  }
  std::unique_ptr<TlsContext> context(new TlsContext());
  context->ctx_ = SSL_CTX_new(TLS_server_method());
  if (context->ctx_ == nullptr) return absl::InternalError(OpenSslError());
  SSL_CTX* ctx = context->ctx_;
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
  SSL_CTX_set_app_data(ctx, context.get());
  if (!options.psk_file.empty()) {
    auto psks = LoadPskFile(options.psk_file);
    if (!psks.ok()) return psks.status();
    context->psks_ = std::move(*psks);
  }
  context->psk_lookup_ = options.psk_lookup;
  if (psk) SSL_CTX_set_psk_server_callback(ctx, &TlsContext::FindPsk);
  if (!options.x509_dir.empty()) {
    const std::string cert = options.x509_dir + "/server-cert.pem";
    const std::string key = options.x509_dir + "/server-key.pem";
    const std::string ca = options.x509_dir + "/ca-cert.pem";
    if (SSL_CTX_use_certificate_chain_file(ctx, cert.c_str()) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key.c_str(), SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1 ||
        SSL_CTX_load_verify_locations(ctx, ca.c_str(), nullptr) != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot load X.509 credentials from ", options.x509_dir,
                       " (ca-cert.pem, server-cert.pem, server-key.pem): ", OpenSslError()));
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
    if (psk) SSL_CTX_set_client_hello_cb(ctx, &TlsContext::ChooseMode, nullptr);
  }
  // TLS 1.2 suites for both kinds of credentials (TLS 1.3 has its own list).
  if (SSL_CTX_set_cipher_list(ctx, "ECDHE-PSK:DHE-PSK:PSK:HIGH:!aNULL:!MD5:!RC4:!3DES") != 1) {
    return absl::InternalError(OpenSslError());
  }
  return context;
}

TlsContext::~TlsContext() {
  for (auto& [identity, key] : psks_) OPENSSL_cleanse(key.data(), key.size());
  SSL_CTX_free(ctx_);
}

int TlsContext::ChooseMode(SSL* ssl, int* /*alert*/, void* /*arg*/) {
  // A client offering a pre-shared key (TLS 1.3's pre_shared_key extension) authenticates with
  // it: asking it for a certificate, or offering ours, would make a PSK-only client give up.
  const unsigned char* psk_extension = nullptr;
  size_t length = 0;
  if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_psk, &psk_extension, &length) == 1) {
    SSL_set_verify(ssl, SSL_VERIFY_NONE, nullptr);
    SSL_certs_clear(ssl);
  }
  return SSL_CLIENT_HELLO_SUCCESS;
}

unsigned int TlsContext::FindPsk(SSL* ssl, const char* identity, unsigned char* psk,
                                 unsigned int max_psk_len) {
  auto* self = static_cast<TlsContext*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
  if (identity == nullptr) return 0;
  std::string key;
  if (auto it = self->psks_.find(identity); it != self->psks_.end()) {
    key = it->second;
  } else if (self->psk_lookup_ != nullptr) {
    key = self->psk_lookup_(identity).value_or("");
  }
  const bool found = !key.empty() && key.size() <= max_psk_len;
  if (found) {
    // TLS 1.3 does not keep the identity where SSL_get_psk_identity finds it: note it here.
    if (auto* chosen = static_cast<std::string*>(SSL_get_app_data(ssl)); chosen != nullptr) {
      *chosen = identity;
    }
    std::memcpy(psk, key.data(), key.size());
  }
  const auto length = static_cast<unsigned int>(found ? key.size() : 0);
  OPENSSL_cleanse(key.data(), key.size());
  return length;
}

absl::StatusOr<std::unique_ptr<TlsTransport>> TlsContext::Accept(int fd) {
  SSL* ssl = SSL_new(ctx_);
  if (ssl == nullptr || SSL_set_fd(ssl, fd) != 1) {
    SSL_free(ssl);
    return absl::InternalError(OpenSslError());
  }
  std::string psk_identity;
  SSL_set_app_data(ssl, &psk_identity);
  const int accepted = SSL_accept(ssl);
  SSL_set_app_data(ssl, nullptr);
  if (accepted != 1) {
    const std::string why = OpenSslError();
    SSL_free(ssl);
    return absl::UnauthenticatedError(absl::StrCat("TLS handshake failed: ", why));
  }
  std::string identity = std::move(psk_identity);
  if (identity.empty() && SSL_get_psk_identity(ssl) != nullptr)
    identity = SSL_get_psk_identity(ssl);
  if (X509* cert = SSL_get1_peer_certificate(ssl); identity.empty() && cert != nullptr) {
    char cn[256] = {};
    X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof(cn));
    identity = cn;
    X509_free(cert);
  } else if (cert != nullptr) {
    X509_free(cert);
  }
  return std::make_unique<TlsTransport>(ssl, std::move(identity));
}

}  // namespace strata::nbd
