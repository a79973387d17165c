#pragma once
// One thread per accepted connection, bounded, for the front ends' servers (API and NBD):
// starts them, lets each leave the table when done, and shuts all down at a stop.
// Header-only and dependent on abseil alone, so api/ and nbd-server/ can share it.

#include <sys/socket.h>
#include <unistd.h>

#include <functional>
#include <map>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace strata::common {

// Thread-safe.
class ConnectionThreads {
 public:
  ~ConnectionThreads() { StopAll(); }

  // Runs `serve(fd)` on a new thread, then leaves the table and closes `fd`. Returns false
  // without starting it when `max_connections` are running (the caller refuses and closes).
  bool Start(int fd, size_t max_connections, std::function<void(int)> serve) {
    absl::MutexLock lock(&mu_);
    for (std::thread& t : finished_) t.join();
    finished_.clear();
    if (connections_.size() >= max_connections) return false;
    connections_[fd] = std::thread([this, fd, serve = std::move(serve)] {
      serve(fd);
      {
        // Leave the table before closing: once closed, the fd number may be reused by accept.
        absl::MutexLock lock(&mu_);
        auto it = connections_.find(fd);
        if (it != connections_.end()) {
          finished_.push_back(std::move(it->second));
          connections_.erase(it);
        }
      }
      ::close(fd);
    });
    return true;
  }

  // Shuts every connection down and joins all threads. Call after the accept loops ended.
  void StopAll() {
    std::map<int, std::thread> connections;
    std::vector<std::thread> finished;
    {
      absl::MutexLock lock(&mu_);
      for (auto& [fd, thread] : connections_) ::shutdown(fd, SHUT_RDWR);
      connections.swap(connections_);
      finished.swap(finished_);
    }
    for (auto& [fd, thread] : connections) thread.join();
    for (std::thread& t : finished) t.join();
  }

 private:
  absl::Mutex mu_;
  std::map<int, std::thread> connections_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> finished_ ABSL_GUARDED_BY(mu_);  // Done, to be joined.
};

}  // namespace strata::common
