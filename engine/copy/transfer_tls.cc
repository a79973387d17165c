#include "copy/transfer_tls.h"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "strata/psk_file.h"

namespace strata::copy {
namespace {

std::string OpenSslError() {
  const unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "the peer closed the connection";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof(buf));
  return buf;
}

// What a handshake in progress needs from its callbacks (SSL app data).
struct Handshake {
  const TransferTls* tls = nullptr;
  const std::string* identity = nullptr;  // Client: the identity to present.
  const std::string* key = nullptr;       // Client: its key.
  std::string chosen;                     // Server: the identity the peer proved.
};

SSL_CTX* NewContext(const SSL_METHOD* method) {
  SSL_CTX* ctx = SSL_CTX_new(method);
  if (ctx == nullptr) return nullptr;
  // Only TLS 1.3: its PSK handshake with ECDHE gives forward secrecy.
  SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_TICKET);
  return ctx;
}

}  // namespace

absl::StatusOr<std::unique_ptr<TransferTls>> TransferTls::Load(const std::string& psk_file) {
  absl::StatusOr<std::map<std::string, std::string>> keys = LoadPskFile(psk_file);
  if (!keys.ok()) return keys.status();
  std::unique_ptr<TransferTls> tls(new TransferTls());
  tls->keys_ = std::move(*keys);
  tls->client_ = NewContext(TLS_client_method());
  tls->server_ = NewContext(TLS_server_method());
  if (tls->client_ == nullptr || tls->server_ == nullptr) {
    return absl::InternalError(absl::StrCat("transfer TLS: ", OpenSslError()));
  }
  SSL_CTX_set_psk_client_callback(tls->client_, &TransferTls::ClientKey);
  SSL_CTX_set_psk_server_callback(tls->server_, &TransferTls::ServerKey);
  return tls;
}

TransferTls::~TransferTls() {
  for (auto& [identity, key] : keys_) OPENSSL_cleanse(key.data(), key.size());
  SSL_CTX_free(client_);
  SSL_CTX_free(server_);
}

unsigned int TransferTls::ClientKey(SSL* ssl, const char* /*hint*/, char* identity,
                                    unsigned int max_identity_length, unsigned char* psk,
                                    unsigned int max_psk_length) {
  const auto* h = static_cast<const Handshake*>(SSL_get_app_data(ssl));
  if (h == nullptr || h->identity->size() + 1 > max_identity_length ||
      h->key->size() > max_psk_length) {
    return 0;
  }
  std::memcpy(identity, h->identity->c_str(), h->identity->size() + 1);
  std::memcpy(psk, h->key->data(), h->key->size());
  return static_cast<unsigned int>(h->key->size());
}

unsigned int TransferTls::ServerKey(SSL* ssl, const char* identity, unsigned char* psk,
                                    unsigned int max_psk_length) {
  auto* h = static_cast<Handshake*>(SSL_get_app_data(ssl));
  if (h == nullptr || identity == nullptr) return 0;
  auto it = h->tls->keys_.find(identity);
  if (it == h->tls->keys_.end() || it->second.size() > max_psk_length) return 0;
  h->chosen = identity;
  std::memcpy(psk, it->second.data(), it->second.size());
  return static_cast<unsigned int>(it->second.size());
}

absl::StatusOr<SSL*> TransferTls::Connect(int fd, const std::string& source_region) {
  auto it = keys_.find(source_region);
  if (it == keys_.end()) it = keys_.begin();
  SSL* ssl = SSL_new(client_);
  if (ssl == nullptr || SSL_set_fd(ssl, fd) != 1) {
    SSL_free(ssl);
    return absl::InternalError(absl::StrCat("transfer TLS: ", OpenSslError()));
  }
  Handshake h{.tls = this, .identity = &it->first, .key = &it->second};
  SSL_set_app_data(ssl, &h);
  const int connected = SSL_connect(ssl);
  SSL_set_app_data(ssl, nullptr);
  if (connected != 1) {
    const std::string why = OpenSslError();
    SSL_free(ssl);
    return absl::UnavailableError(
        absl::StrCat("transfer TLS handshake with the peer of ", source_region, " failed (", why,
                     "): both stratads need the same key in --transfer-psk-file"));
  }
  return ssl;
}

absl::StatusOr<SSL*> TransferTls::Accept(int fd, std::string* identity) {
  SSL* ssl = SSL_new(server_);
  if (ssl == nullptr || SSL_set_fd(ssl, fd) != 1) {
    SSL_free(ssl);
    return absl::InternalError(absl::StrCat("transfer TLS: ", OpenSslError()));
  }
  Handshake h{.tls = this};
  SSL_set_app_data(ssl, &h);
  const int accepted = SSL_accept(ssl);
  SSL_set_app_data(ssl, nullptr);
  if (accepted != 1 || h.chosen.empty()) {
    const std::string why = OpenSslError();
    SSL_free(ssl);
    return absl::UnauthenticatedError(
        absl::StrCat("a transfer peer failed the TLS handshake (no shared key?): ", why));
  }
  *identity = std::move(h.chosen);
  return ssl;
}

}  // namespace strata::copy
