#pragma once
// TLS for the transfer protocol between stratad processes: TLS 1.3 with pre-shared keys, one per
// peer, from a psktool file both sides hold (StoreOptions::transfer_psk_file). It authenticates
// the peers to each other and encrypts the stream; copies within one process use a socketpair
// and need neither.

#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_st SSL;

namespace strata::copy {

class TransferTls {
 public:
  // Loads the keys (strata/psk_file.h); errors name the file.
  static absl::StatusOr<std::unique_ptr<TransferTls>> Load(const std::string& psk_file);
  ~TransferTls();
  TransferTls(const TransferTls&) = delete;
  TransferTls& operator=(const TransferTls&) = delete;

  // The client side on a connected `fd`, as the identity named like `source_region` when the
  // file has one, else its first. The returned SSL is the caller's (SSL_free).
  absl::StatusOr<SSL*> Connect(int fd, const std::string& source_region);
  // The server side: the peer must prove one of the file's keys. Returns the SSL and sets
  // `identity` to the key's identity.
  absl::StatusOr<SSL*> Accept(int fd, std::string* identity);

 private:
  TransferTls() = default;
  static unsigned int ClientKey(SSL* ssl, const char* hint, char* identity,
                                unsigned int max_identity_length, unsigned char* psk,
                                unsigned int max_psk_length);
  static unsigned int ServerKey(SSL* ssl, const char* identity, unsigned char* psk,
                                unsigned int max_psk_length);

  std::map<std::string, std::string> keys_;  // Identity to key; wiped on destruction.
  SSL_CTX* client_ = nullptr;
  SSL_CTX* server_ = nullptr;
};

}  // namespace strata::copy
