#pragma once
// The NBD server: listeners on TCP and unix sockets, one thread per connection running a
// Session over an ExportCatalog (strata/export.h), the only part of the engine it sees.

#include <atomic>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "common/connection_threads.h"
#include "session.h"
#include "strata/export.h"
#include "tls.h"

namespace strata::nbd {

struct NbdServerOptions {
  // Addresses: "HOST:PORT" (TCP; port 0 picks one) or "unix:PATH".
  std::vector<std::string> listen = {"127.0.0.1:10809"};
  size_t max_connections = 256;
  // A client that has not chosen an export this long after connecting is disconnected.
  absl::Duration handshake_timeout = absl::Seconds(30);
  // The most a plaintext connection polls its socket before it sleeps for the next request
  // (SocketTransport, which adapts the window to the client); zero: it sleeps at once. stratad
  // sets 50 us.
  absl::Duration poll = absl::ZeroDuration();
  // kOff unless TLS credentials are given; then kOn (offered) or kRequire.
  TlsMode tls_mode = TlsMode::kOff;
  TlsOptions tls;
  // Who may open exports (session.h).
  NbdAuth auth = NbdAuth::kAccount;
};

// Thread-safe. `exports` must outlive the server.
class NbdServer {
 public:
  NbdServer(ExportCatalog& exports, NbdServerOptions options);
  ~NbdServer();
  NbdServer(const NbdServer&) = delete;
  NbdServer& operator=(const NbdServer&) = delete;

  [[nodiscard]] absl::Status Start();
  void Stop();
  // The bound addresses, in the order of options.listen ("127.0.0.1:PORT", "unix:PATH").
  std::vector<std::string> addresses() const;

 private:
  struct Listener {
    int fd = -1;
    std::string address;
    std::thread thread;
  };
  void AcceptLoop(Listener& listener);
  void Serve(int fd);

  ExportCatalog& exports_;
  const NbdServerOptions options_;
  std::unique_ptr<TlsContext> tls_;
  std::vector<std::unique_ptr<Listener>> listeners_;
  std::atomic<bool> stopping_{false};
  common::ConnectionThreads connections_;
};

}  // namespace strata::nbd
