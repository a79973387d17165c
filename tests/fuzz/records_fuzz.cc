// Fuzz target for what Strata reads back from its own catalog when a store opens (a catalog is
// outside bytes once a disk lies or a file is damaged): volume and snapshot records, chunk keys
// and locations, snapshot-tree entries, KMS key records, image, image-settings and instance
// records. Every decoder must reject garbage with a status, never crash or read out of bounds;
// what one accepts must encode again into bytes it accepts (what the next write would store).
// Built with clang -fsanitize=fuzzer it is a libFuzzer target; otherwise fuzz_driver.cc runs it
// on seeded random mutations of the seeds below (as a ctest, and under ASan+UBSan in CI).

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "chunk/chunk_key.h"
#include "chunk/chunk_store.h"
#include "crypto/kms_internal.h"
#include "image/image_records.h"
#include "meta/schema.h"
#include "volume/snapshot_tree.h"

namespace {

using namespace strata;

template <typename T>
void MustRoundTrip(const absl::StatusOr<T>& decoded,
                   absl::StatusOr<T> (*decode)(absl::string_view)) {
  if (decoded.ok() && !decode(decoded->Encode()).ok()) std::abort();
}

}  // namespace

namespace {
std::string KmsSeed() {
  crypto::KmsImpl::Record r;
  r.info.key_id = "1234abcd-12ab-34cd-56ef-1234567890ab";
  r.policy = "{}";
  r.material = {"AAAA"};
  return r.Encode();
}
}  // namespace

// Seeds for tests/fuzz/fuzz_driver.cc: one valid encoding of each record.
std::vector<std::string> FuzzSeeds() {
  meta::VolumeRecord v;
  v.id = "vol-0123456789abcdef0";
  v.size_bytes = 1 << 30;
  v.tags = {{"Name", "web"}};
  v.volume_type = "gp3";
  v.modification.start_time_micros = 1;
  v.modification.original_type = "gp2";
  meta::SnapshotRecord s;
  s.id = "snap-0123456789abcdef0";
  s.volume_id = v.id;
  s.shared_with = {"all"};
  s.lock.mode = 2;  // Version 4: a compliance lock, and a stay in the Recycle Bin.
  s.lock.cool_off_until_micros = 1;
  s.lock.expires_micros = 2;
  s.recycled_micros = 3;
  s.recycle_until_micros = 4;
  chunk::ChunkKey key;
  key.domain = 3;
  chunk::ChunkLocation where;
  where.segment_id = 7;
  where.raw_length = 65536;
  ImageInfo image;
  image.id = "ami-0123456789abcdef0";
  image.name = "busybox";
  image.recycle_bin = RecycleBinEntry{1, 2};
  InstanceInfo instance;
  instance.id = "i-0123456789abcdef0";
  return {v.Encode(),
          s.Encode(),
          key.Encode(),
          where.Encode(),
          volume::EncodeEntry(key),
          image::EncodeImage(image),
          image::EncodeInstance(instance),
          image::EncodeSettings({}),
          KmsSeed()};
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  MustRoundTrip<meta::VolumeRecord>(meta::VolumeRecord::Decode(input), &meta::VolumeRecord::Decode);
  MustRoundTrip<meta::SnapshotRecord>(meta::SnapshotRecord::Decode(input),
                                      &meta::SnapshotRecord::Decode);
  if (std::optional<chunk::ChunkKey> k = chunk::ChunkKey::Decode(input)) {
    if (!chunk::ChunkKey::Decode(k->Encode()).has_value()) std::abort();
  }
  if (std::optional<chunk::ChunkLocation> l = chunk::ChunkLocation::Decode(input)) {
    if (!chunk::ChunkLocation::Decode(l->Encode()).has_value()) std::abort();
  }
  if (absl::StatusOr<volume::ChunkEntry> e = volume::DecodeEntry(input); e.ok()) {
    if (!volume::DecodeEntry(volume::EncodeEntry(*e)).ok()) std::abort();
  }
  if (std::optional<crypto::KmsImpl::Record> r = crypto::KmsImpl::Record::Decode(input)) {
    if (!crypto::KmsImpl::Record::Decode(r->Encode()).has_value()) std::abort();
  }
  if (absl::StatusOr<ImageInfo> i = image::DecodeImage(input); i.ok()) {
    if (!image::DecodeImage(image::EncodeImage(*i)).ok()) std::abort();
  }
  if (absl::StatusOr<ImageSettings> st = image::DecodeSettings(input); st.ok()) {
    if (!image::DecodeSettings(image::EncodeSettings(*st)).ok()) std::abort();
  }
  if (absl::StatusOr<InstanceInfo> in = image::DecodeInstance(input); in.ok()) {
    if (!image::DecodeInstance(image::EncodeInstance(*in)).ok()) std::abort();
  }
  return 0;
}
