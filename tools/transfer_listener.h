#pragma once
// stratad's transfer listener (--transfer-listen): accepts peers' connections over TCP and
// serves each on its own thread with Store::ServeTransfer, at most kMaxConnections at once.

#include <atomic>
#include <map>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "strata/store.h"

namespace strata::tools {

class TransferListener {
 public:
  static constexpr int kMaxConnections = 64;
  TransferListener(Store& store, std::string address)
      : store_(store), address_(std::move(address)) {}
  ~TransferListener() { Stop(); }
  // Binds HOST:PORT (port 0: any) and starts accepting.
  absl::Status Start();
  // Stops accepting, cuts open connections and joins every thread.
  void Stop();
  // The bound address, HOST:PORT.
  const std::string& bound() const { return bound_; }

 private:
  void AcceptLoop();

  Store& store_;
  const std::string address_;
  std::string bound_;
  int listen_fd_ = -1;
  std::thread acceptor_;
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::map<int, std::thread> connections_ ABSL_GUARDED_BY(mu_);  // By fd.
  std::vector<std::thread> finished_ ABSL_GUARDED_BY(mu_);
};

}  // namespace strata::tools
