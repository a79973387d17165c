#pragma once
// A volume head in the Ceph cluster (the RADOS backend's volumes): its bytes as objects of
// rados::kHeadObjectBytes in the region's data pool, thin. docs/formats/rados.md, "Volume heads".

#include <memory>
#include <string>

#include "rados/head_objects.h"
#include "rados/pool.h"
#include "volume/head.h"

namespace strata::volume {

// Writes go to the OSDs asynchronously; Sync waits until each write that returned before it is
// acknowledged, so a FLUSH means durable in the cluster. Queued reads are librados aio reads
// whose completions join the ring's (IoRing::QueueAsync): a burst of reads from one connection
// is in flight together. Writes are never queued: they return once sent.
class RadosHead final : public Head {
 public:
  RadosHead(rados::Pool data_pool, const std::string& volume_id);
  // Removes every object of a `size_bytes` head.
  [[nodiscard]] static absl::Status Delete(const rados::Pool& data_pool,
                                           const std::string& volume_id, uint64_t size_bytes);

  absl::Status Read(uint64_t offset_bytes, std::span<std::byte> out) override;
  absl::Status Write(uint64_t offset_bytes, std::span<const std::byte> data) override;
  absl::Status PunchHole(uint64_t offset_bytes, uint64_t length_bytes) override;
  bool QueueRead(uint64_t offset_bytes, std::span<std::byte> out, IoRing& ring,
                 IoRing::Op* op) override;
  bool QueueWrite(uint64_t, std::span<const std::byte>, IoRing&, IoRing::Op*) override {
    return false;
  }
  void NoteWritten(uint64_t) override {}
  bool reads_wait_on_network() const override { return true; }
  absl::Status Sync() override;
  absl::Status Grow(uint64_t) override { return absl::OkStatus(); }  // Thin: nothing to make.

 private:
  const std::string volume_id_;
  rados::HeadObjects objects_;
};

}  // namespace strata::volume
