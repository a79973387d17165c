#pragma once
// A thin block volume: the live, writable side of Strata (an EBS volume).

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "strata/io_limiter.h"
#include "strata/io_ring.h"

namespace strata {

// Every offset and length given to a Volume is a multiple of this.
inline constexpr uint64_t kSectorBytes = 512;
// Volume sizes are multiples of this.
inline constexpr uint64_t kVolumeSizeAlignBytes = 4096;
// The largest volume: 64 TiB.
inline constexpr uint64_t kMaxVolumeSizeBytes = uint64_t{64} << 40;

enum class VolumeState { kAvailable, kDeleting };

// A volume's latest ModifyVolume, as DescribeVolumesModifications shows it: "modifying", then
// "optimizing" (progress growing with time), then "completed" (StoreOptions::volume_modification
// times them). The new size and rates apply when it starts.
struct VolumeModification {
  std::string state;
  int progress = 0;  // Percent.
  uint64_t start_time_micros = 0;
  uint64_t end_time_micros = 0;  // When it completes (or completed).
  uint64_t original_size_bytes = 0;
  std::string original_type;
  uint64_t original_iops = 0, original_throughput = 0;
};

struct VolumeInfo {
  std::string id;  // "vol-" and 17 hex digits.
  uint64_t size_bytes = 0;
  std::string snapshot_id;  // The snapshot it was created from; empty if none.
  uint64_t create_time_micros = 0;
  std::map<std::string, std::string> tags;
  // Hydration from the base snapshot: percent of chunks held in the volume's own head.
  int hydration_percent = 100;
  bool hydrating = false;
  // Made from a snapshot with fast snapshot restore: every chunk was in its head at creation.
  bool fast_restored = false;
  std::string owner;  // Account id.
  std::string volume_type = "gp3";
  uint64_t iops = 0;
  uint64_t throughput = 0;
  bool encrypted = false;
  std::string kms_key_id;   // The ARN of the KMS key that wraps its data key.
  std::string attached_to;  // Instance id (attachment group); empty when available.
  std::string device;
  uint64_t attach_time_micros = 0;
  // RADOS: the node that serves it (DIR/node-id), and whether that is another node of the
  // region (whose volumes this node lists but does not serve). Empty and false on the local
  // backend.
  std::string node;
  bool elsewhere = false;
  std::optional<VolumeModification> modification;  // Never modified: none.
};

// Snapshot lookups one Volume::Allocation call makes at most (bounding its work on a huge
// range of a volume created from a snapshot; callers ask again from where the runs end).
inline constexpr uint64_t kAllocationLookupsPerCall = 16384;

// A run of a volume's address space, as Volume::Allocation reports it.
struct AllocationExtent {
  uint64_t length_bytes = 0;
  bool zero = false;  // True: reads as zeros and holds no data (a hole).
};

// A run of a volume's address space, as Volume::Changes reports it.
struct ChangeExtent {
  uint64_t length_bytes = 0;
  bool changed = false;  // True: the range may differ from the volume's last snapshot.
};

// One asynchronous request on a volume (Volume::SubmitRead / SubmitWrite): the caller derives
// from it, owns it and keeps it and its buffer alive until Done has run; then it may be reused.
class VolumeIo : public IoRing::Op {
 public:
  // The request's outcome: what Read or Write would have returned.
  virtual void Done(absl::Status status) = 0;

  // --- Filled in by the volume while the request is in flight. ---
  class Completer {
   public:
    virtual void Complete(VolumeIo& io, int result) = 0;

   protected:
    ~Completer() = default;
  };
  void Finish(int result) final { completer->Complete(*this, result); }
  Completer* completer = nullptr;
  uint64_t offset_bytes = 0;
  std::span<std::byte> buffer;
  bool write = false;
};

// A volume of a Region. Obtained from Region::GetVolume; valid until the volume is deleted or the
// Store closes. Thread-safe: any number of threads may do I/O at once (as NBD multi-conn does).
// I/O and Flush fail with kInvalidArgument for misaligned or out-of-range requests and change
// nothing; an I/O failure returns the Env's status (kResourceExhausted for a full disk).
class Volume {
 public:
  virtual ~Volume() = default;

  virtual const std::string& id() const = 0;
  virtual uint64_t size_bytes() const = 0;
  // The budget its type, IOPS and throughput give its NBD I/O (docs/qos.md), and its counters.
  virtual IoLimiter& limiter() = 0;

  // Fills `out` from `offset_bytes`; never-written ranges read as zeros.
  // REQUIRES: offset and size multiples of kSectorBytes, within size_bytes().
  [[nodiscard]] virtual absl::Status Read(uint64_t offset_bytes, std::span<std::byte> out) = 0;
  // Writes `data` at `offset_bytes`. With `fua`, the data is durable when this returns.
  [[nodiscard]] virtual absl::Status Write(uint64_t offset_bytes, std::span<const std::byte> data,
                                           bool fua = false) = 0;
  // Deallocates a range: it reads as zeros afterwards and whole chunks give their space back.
  // Chunks with nothing beneath them are no longer held (Allocation reports holes).
  [[nodiscard]] virtual absl::Status Trim(uint64_t offset_bytes, uint64_t length_bytes) = 0;
  // Makes a range read as zeros and keeps it held by the volume (Allocation reports data, as
  // NBD's NO_HOLE asks). Zero chunks are still never stored. Both cost what the range holds
  // plus a bitmap bit per chunk, never a write of the zeros.
  [[nodiscard]] virtual absl::Status WriteZeroes(uint64_t offset_bytes, uint64_t length_bytes,
                                                 bool fua = false) = 0;
  // Describes [offset_bytes, offset_bytes + length_bytes) as runs of data and holes, at most
  // `max_extents` runs (the last may end before the range does). Chunks the volume holds count
  // as data; chunks it reads through a snapshot are holes where the snapshot has none. Looks up
  // at most kAllocationLookupsPerCall of those, so the runs may also end early there.
  [[nodiscard]] virtual absl::StatusOr<std::vector<AllocationExtent>> Allocation(
      uint64_t offset_bytes, uint64_t length_bytes, size_t max_extents) = 0;
  // Describes [offset_bytes, offset_bytes + length_bytes) as runs of chunks changed and not
  // changed since the volume's last snapshot (everything is changed when it has none), at most
  // `max_extents` runs. Never misses a change, across crashes too; after an unclean stop a chunk
  // the volume holds is compared with the snapshot the first time it is asked about, so the
  // answer stays exact rather than reporting every chunk held.
  [[nodiscard]] virtual absl::StatusOr<std::vector<ChangeExtent>> Changes(uint64_t offset_bytes,
                                                                          uint64_t length_bytes,
                                                                          size_t max_extents) = 0;
  // Makes every write completed before this call durable (survives a crash of the process or
  // the machine).
  [[nodiscard]] virtual absl::Status Flush() = 0;

  // Read and Write for an event loop. The request's file I/O is queued in `ring` (which the
  // caller submits with its other I/O) and io.Done runs from a later ring.Wait with what Read or
  // Write would have returned. A request that needs more than one file operation (a chunk still
  // read through a snapshot, a copy-up, a pending snapshot's copy-before-write, a part of an
  // encrypted 4 KiB unit, FUA) or would have to wait for a lock first waits for the ring's
  // other operations, runs as Read/Write and calls io.Done before returning.
  // SubmitWrite may overwrite `data` (an encrypted volume enciphers it in place).
  // REQUIRES: the caller never blocks on anything else while operations of `ring` on this
  // volume are in flight (a snapshot freeze waits for queued writes to land).
  virtual void SubmitRead(uint64_t offset_bytes, std::span<std::byte> out, IoRing& ring,
                          VolumeIo& io) {
    (void)ring.Wait();
    io.Done(Read(offset_bytes, out));
  }
  // True when a read may wait on the network (a head or stored chunks in a Ceph cluster): its
  // caller should keep several in flight rather than hold them to a cache's worth.
  virtual bool reads_wait_on_network() const { return false; }
  virtual void SubmitWrite(uint64_t offset_bytes, std::span<std::byte> data, bool fua, IoRing& ring,
                           VolumeIo& io) {
    (void)ring.Wait();
    io.Done(Write(offset_bytes, data, fua));
  }
  // A write (not FUA) whose payload waits in a pipe: a server splices a socket's bytes into one
  // so that the kernel copies them into the volume's head once, with no buffer between
  // (docs/architecture.md). SplicesWrite says whether WriteSpliced would likely take such a
  // write now (an unencrypted volume, a head in local files, every chunk held), so that the
  // caller splices only then. WriteSpliced writes the `length_bytes` the pipe `pipe_fd` (its
  // read end) holds at `offset_bytes` and returns what Write would have; nullopt when it cannot
  // (things changed since SplicesWrite), having taken nothing from the pipe: then read them
  // out and use SubmitWrite.
  virtual bool SplicesWrite(uint64_t /*offset_bytes*/, uint64_t /*length_bytes*/) { return false; }
  [[nodiscard]] virtual std::optional<absl::Status> WriteSpliced(uint64_t /*offset_bytes*/,
                                                                 int /*pipe_fd*/,
                                                                 uint64_t /*length_bytes*/) {
    return std::nullopt;
  }
};

}  // namespace strata
