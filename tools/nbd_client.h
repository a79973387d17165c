#pragma once
// A minimal NBD client for the strata CLI (import-image): fixed newstyle handshake with
// NBD_OPT_GO over a unix socket, then WRITE and FLUSH with simple replies.

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "absl/status/statusor.h"

namespace strata::tools {

class NbdClient {
 public:
  // Connects to `socket_path` and opens `export_name`.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<NbdClient>> Connect(
      const std::string& socket_path, const std::string& export_name);
  ~NbdClient();  // Sends NBD_CMD_DISC.

  uint64_t size_bytes() const { return size_; }
  [[nodiscard]] absl::Status Write(uint64_t offset, std::span<const char> data);
  [[nodiscard]] absl::Status Flush();

 private:
  NbdClient(int fd, uint64_t size) : fd_(fd), size_(size) {}
  absl::Status Command(uint16_t type, uint64_t offset, std::span<const char> payload,
                       uint32_t length);

  const int fd_;
  const uint64_t size_;
  uint64_t next_cookie_ = 1;
};

}  // namespace strata::tools
