#include "volume/rados_head.h"

#include "absl/strings/str_cat.h"
#include "rados/cluster.h"

namespace strata::volume {

RadosHead::RadosHead(rados::Pool data_pool, const std::string& volume_id)
    : volume_id_(volume_id), objects_(std::move(data_pool), volume_id) {}

absl::Status RadosHead::Delete(const rados::Pool& data_pool, const std::string& volume_id,
                               uint64_t size_bytes) {
  return rados::FromRados(rados::HeadObjects::RemoveAll(data_pool, volume_id, size_bytes),
                          absl::StrCat("removing the head objects of ", volume_id));
}

absl::Status RadosHead::Read(uint64_t offset_bytes, std::span<std::byte> out) {
  return rados::FromRados(
      objects_.Read(offset_bytes, reinterpret_cast<char*>(out.data()), out.size()),
      absl::StrCat("reading the head of ", volume_id_));
}

bool RadosHead::QueueRead(uint64_t offset_bytes, std::span<std::byte> out, IoRing& ring,
                          IoRing::Op* op) {
  return ring.QueueAsync(
      [this, offset_bytes, out](IoRing::Complete complete) {
        objects_.ReadAsync(offset_bytes, reinterpret_cast<char*>(out.data()), out.size(),
                           [complete = std::make_shared<IoRing::Complete>(std::move(complete)),
                            n = static_cast<int>(out.size())](int rc) mutable {
                             std::move (*complete)(rc < 0 ? rc : n);
                           });
      },
      op);
}

absl::Status RadosHead::Write(uint64_t offset_bytes, std::span<const std::byte> data) {
  return rados::FromRados(
      objects_.Write(offset_bytes, reinterpret_cast<const char*>(data.data()), data.size()),
      absl::StrCat("writing the head of ", volume_id_));
}

absl::Status RadosHead::PunchHole(uint64_t offset_bytes, uint64_t length_bytes) {
  return rados::FromRados(objects_.Zero(offset_bytes, length_bytes),
                          absl::StrCat("zeroing the head of ", volume_id_));
}

absl::Status RadosHead::Sync() {
  const int rc = objects_.Flush();
  if (rc >= 0) return absl::OkStatus();
  const absl::Status s = rados::FromRados(rc, absl::StrCat("writing the head of ", volume_id_));
  return absl::DataLossError(
      absl::StrCat(s.message(), "; writes since the last successful flush may be lost, and no ",
                   "later flush can be trusted until the volume is opened again"));
}

}  // namespace strata::volume
