#pragma once
// The EBS volume types' rules (docs/qos.md), for front ends that must check a change whole
// before making any part of it (ModifyVolume: size and type together).

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace strata {

// OK when a volume of `size_bytes` may have `volume_type` with `iops` and `throughput` (MiB/s;
// 0: the type's default; gp2 takes none). Else InvalidArgument carrying EC2's error code
// (AwsErrorCode): InvalidParameterValue, InvalidParameterCombination or MissingParameter.
[[nodiscard]] absl::Status CheckVolumeType(const std::string& volume_type, uint64_t size_bytes,
                                           uint64_t iops, uint64_t throughput);

}  // namespace strata
