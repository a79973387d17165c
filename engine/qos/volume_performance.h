#pragma once
// What a volume of each EBS type may do, following AWS's documented model (docs/qos.md):
// the parameters a type accepts (with AWS's defaults and ratio limits), and the rates and burst
// buckets its I/O is held to.
//
// gp3     3,000 IOPS / 125 MiB/s baseline; provisioned 3,000-16,000 IOPS (at most 500 per GiB)
//         and 125-1,000 MiB/s (at most 0.25 MiB/s per provisioned IOPS). 1 GiB - 16 TiB.
// gp2     3 IOPS per GiB (100 to 16,000); below 3,000 a burst bucket of 5.4 million I/O credits
//         refilled at the baseline lets it run at 3,000 IOPS. 128 MiB/s up to 170 GiB, 250 above.
// io1     100-64,000 provisioned IOPS (at most 50 per GiB); 256 KiB per IOPS, up to 500 MiB/s
//         (1,000 MiB/s above 32,000 IOPS). 4 GiB - 16 TiB.
// io2     Block Express: 100-256,000 IOPS (at most 1,000 per GiB); 256 KiB per IOPS, up to
//         4,000 MiB/s. 4 GiB - 64 TiB.
// st1     40 MiB/s per TiB baseline, 250 per TiB burst, at most 500 MiB/s; a burst bucket of
//         1 TiB of credits per TiB. 125 GiB - 16 TiB.
// sc1     12 MiB/s per TiB baseline, 80 per TiB burst, at most 250 MiB/s; same bucket. 125 GiB -
//         16 TiB.
// standard  (magnetic, previous generation) 200 IOPS, 90 MiB/s. 1 GiB - 1 TiB.
//
// I/O is counted as AWS counts it: SSD types in units of up to 256 KiB (a 1 MiB request is 4),
// HDD types (st1, sc1, standard) in 1 MiB units, where a request that does not continue the
// previous one costs a whole unit however small, and sequential ones are merged.

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace strata::qos {

// A volume's type and its provisioned figures, as CreateVolume/ModifyVolume give them (0: not
// given) and as DescribeVolumes shows them once normalized.
struct VolumeSpec {
  std::string type = "gp3";
  uint64_t size_gib = 0;
  uint64_t iops = 0;        // Provisioned (gp3, io1, io2) or the baseline AWS shows (gp2).
  uint64_t throughput = 0;  // MiB/s: provisioned (gp3) or 0.
};

// Checks `requested` against its type's rules and fills in AWS's defaults. Errors are
// InvalidArgument carrying EC2's error code (AwsErrorCode): InvalidParameterValue,
// InvalidParameterCombination or MissingParameter.
[[nodiscard]] absl::StatusOr<VolumeSpec> Normalize(const VolumeSpec& requested);

// Normalize for a volume of `size_bytes`: sizes below a GiB (an image's, a test's; the engine
// allows them) follow the rules of one GiB, others count whole GiB rounded up.
[[nodiscard]] absl::StatusOr<VolumeSpec> NormalizeForBytes(const std::string& type,
                                                           uint64_t size_bytes, uint64_t iops,
                                                           uint64_t throughput);

// The IOPS a volume record provisioned: its shown `iops`, except gp2's, which follow from its
// size (Normalize refuses them as a request).
inline uint64_t ProvisionedIops(const std::string& type, uint64_t iops) {
  return type == "gp2" ? 0 : iops;
}

// The rates a normalized spec is held to. A lane with a credit bucket runs at `burst` while it
// has credits and at `baseline` once they are spent; without one, `burst` equals `baseline`.
struct Lane {
  double baseline = 0;  // Per second: I/O units, or bytes.
  double burst = 0;     // Per second, while credits last (>= baseline).
  double credits = 0;   // Bucket size, in the lane's unit; 0: no bucket.
};
struct Limits {
  Lane units;  // I/O operations, counted in io_unit_bytes units.
  Lane bytes;  // Throughput.
  uint64_t io_unit_bytes = 0;
  bool merges_sequential = false;  // HDD: sequential I/O shares units.
};
Limits LimitsOf(const VolumeSpec& spec);

}  // namespace strata::qos
