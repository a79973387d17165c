#pragma once
// What a block-device front end (the NBD server) can open: exports, and the catalog that finds
// them and decides who may open what. The engine implements both over a Store
// (NewStoreExportCatalog); a front end depends on this interface only, never on Store or Region.

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "strata/io_ring.h"
#include "strata/volume.h"

namespace strata {

class Store;

// Connections one export serves at once (NBD multi-conn clients open several).
inline constexpr int kMaxConnectionsPerExport = 64;
// Connections one account's clients hold open at once, over all its exports: half of the NBD
// server's default cap, so one account cannot take every connection from the others.
inline constexpr int kMaxConnectionsPerAccount = 128;

// An account's NBD TLS pre-shared key (32 bytes): HMAC-SHA256 of a fixed label under its secret
// access key, so that whoever holds the account's AWS credentials can derive it (`strata
// nbd-key`) and nothing else needs to be stored or handed out. The PSK identity is the access
// key id.
std::string DeriveNbdKey(const std::string& secret_access_key);

// One client's handle on an export. Thread-compatible (one session uses it).
class Export {
 public:
  virtual ~Export() = default;
  virtual const std::string& name() const = 0;
  virtual std::string description() const = 0;
  virtual uint64_t size_bytes() const = 0;
  virtual bool read_only() const = 0;
  // Volumes grow (NBD_CMD_RESIZE) and report changes since their last snapshot.
  virtual bool is_volume() const = 0;

  [[nodiscard]] virtual absl::Status Read(uint64_t offset, std::span<std::byte> out) = 0;
  // The volume's I/O budget, which a session asks before each read and write; none for
  // snapshot exports. Default: none.
  virtual IoLimiter* limiter() { return nullptr; }
  // True when Read may wait on the network (a snapshot of a region on RADOS, a volume whose head
  // or chunks are in the cluster): a session then keeps several reads in flight however large
  // they are. Default: false.
  virtual bool reads_wait_on_network() const { return false; }
  [[nodiscard]] virtual absl::Status Write(uint64_t offset, std::span<const std::byte> data,
                                           bool fua) = 0;
  [[nodiscard]] virtual absl::Status Trim(uint64_t offset, uint64_t length) = 0;
  [[nodiscard]] virtual absl::Status WriteZeroes(uint64_t offset, uint64_t length, bool fua) = 0;
  [[nodiscard]] virtual absl::Status Flush() = 0;
  [[nodiscard]] virtual absl::Status Resize(uint64_t new_size_bytes) = 0;
  [[nodiscard]] virtual absl::StatusOr<std::vector<AllocationExtent>> Allocation(
      uint64_t offset, uint64_t length, size_t max_extents) = 0;
  [[nodiscard]] virtual absl::StatusOr<std::vector<ChangeExtent>> Changes(uint64_t offset,
                                                                          uint64_t length,
                                                                          size_t max_extents) = 0;
  // Read and Write through the session's ring (Volume::SubmitRead/SubmitWrite): io.Done runs
  // when the request has finished. Exports that are not volumes run them at once, or reads on
  // the ring's helpers where they wait on the network (IoRing::QueueCall).
  virtual void SubmitRead(uint64_t offset, std::span<std::byte> out, IoRing& ring, VolumeIo& io) {
    if (reads_wait_on_network() &&
        ring.QueueCall([this, offset, out] { return Read(offset, out); },
                       [&io](absl::Status s) { io.Done(std::move(s)); })) {
      return;
    }
    (void)ring.Wait();
    io.Done(Read(offset, out));
  }
  virtual void SubmitWrite(uint64_t offset, std::span<std::byte> data, bool fua, IoRing& ring,
                           VolumeIo& io) {
    (void)ring.Wait();
    io.Done(Write(offset, data, fua));
  }
  // A write whose payload waits in a pipe (Volume::SplicesWrite, Volume::WriteSpliced).
  // Default: never.
  virtual bool SplicesWrite(uint64_t /*offset*/, uint64_t /*length*/) { return false; }
  [[nodiscard]] virtual std::optional<absl::Status> WriteSpliced(uint64_t /*offset*/,
                                                                 int /*pipe_fd*/,
                                                                 uint64_t /*length*/) {
    return std::nullopt;
  }
};

class ExportCatalog {
 public:
  virtual ~ExportCatalog() = default;
  // Opens export `name` for `account` (an account id; nullopt for the operator: a client the
  // server trusts with every export). kNotFound when there is no such export or it is not the
  // account's; kResourceExhausted when it has kMaxConnectionsPerExport connections, or the
  // account kMaxConnectionsPerAccount.
  virtual absl::StatusOr<std::unique_ptr<Export>> Open(
      const std::string& name, const std::optional<std::string>& account) = 0;
  // The attached volumes `account` may open (snapshots are opened on request, not listed).
  virtual std::vector<std::string> List(const std::optional<std::string>& account) = 0;
  // The account id a TLS identity (an account name or id, or an access key id) names, if any.
  virtual std::optional<std::string> AccountFor(const std::string& identity) = 0;
  // The derived PSK (DeriveNbdKey) of the account whose access key id is `identity`, if any.
  virtual std::optional<std::string> NbdKeyFor(const std::string& identity) = 0;
};

// The exports of a Store's regions: every attached volume under its volume id (read-write) and
// every completed snapshot under its snapshot id (read-only, opened on request, not listed).
// Thread-safe; `store` must outlive it and its exports.
std::unique_ptr<ExportCatalog> NewStoreExportCatalog(Store& store);

}  // namespace strata
