#pragma once
// SharedSection: code that runs in one process at a time among all the processes sharing a
// region (stratad nodes on one RADOS cluster), and tells each process's caches when another
// process changed what they hold. On a store that one process owns it is free and never stale.
// docs/ceph.md ("Several nodes, one region").

#include <cstdint>
#include <functional>
#include <utility>

#include "absl/status/statusor.h"

namespace strata::util {

// A held section, released when destroyed. Movable.
class SharedHold {
 public:
  SharedHold() = default;
  explicit SharedHold(std::function<void()> release) : release_(std::move(release)) {}
  SharedHold(SharedHold&& other) noexcept : release_(std::exchange(other.release_, nullptr)) {}
  SharedHold& operator=(SharedHold&& other) noexcept {
    if (this != &other) {
      Reset();
      release_ = std::exchange(other.release_, nullptr);
    }
    return *this;
  }
  SharedHold(const SharedHold&) = delete;
  SharedHold& operator=(const SharedHold&) = delete;
  ~SharedHold() { Reset(); }

 private:
  void Reset() {
    if (release_) std::exchange(release_, nullptr)();
  }
  std::function<void()> release_;
};

// Thread-safe. Sections nest: threads of one process share a held section (their own mutexes
// order them); another process waits until every thread here has left. Enter the section
// before taking any mutex of a module that caches shared state, so that a cache reloads with
// nothing of its module held.
class SharedSection {
 public:
  virtual ~SharedSection() = default;
  // Waits (bounded) until this process holds the section. kUnavailable when it cannot.
  [[nodiscard]] virtual absl::StatusOr<SharedHold> Enter() = 0;
  // How many times this process found, on entering, that another process had changed shared
  // state. A cache loaded when this read N is stale once it reads more than N.
  virtual uint64_t foreign_changes() const = 0;
};

// The section of a store only this process uses: Enter is free, nothing is ever stale.
SharedSection& SoleProcess();

}  // namespace strata::util
