#include "qos/volume_performance.h"

#include <algorithm>
#include <array>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "strata/aws_error.h"
#include "strata/volume_types.h"

namespace strata::qos {
namespace {

constexpr double kMiB = 1024.0 * 1024.0;
constexpr uint64_t kSsdUnitBytes = 256 * 1024;
constexpr uint64_t kHddUnitBytes = 1024 * 1024;

// One type's rules: sizes, and the provisioned IOPS it takes (0, 0: none).
struct TypeRules {
  const char* type;
  uint64_t min_gib, max_gib;
  uint64_t min_iops, max_iops;  // Provisioned.
  uint64_t iops_per_gib;        // Ratio limit on provisioned IOPS (0: none).
  bool iops_required;
  bool takes_throughput;
};
constexpr std::array<TypeRules, 7> kRules = {{
    {"gp3", 1, 16384, 3000, 16000, 500, false, true},
    {"gp2", 1, 16384, 0, 0, 0, false, false},
    {"io1", 4, 16384, 100, 64000, 50, true, false},
    {"io2", 4, 65536, 100, 256000, 1000, true, false},
    {"st1", 125, 16384, 0, 0, 0, false, false},
    {"sc1", 125, 16384, 0, 0, 0, false, false},
    {"standard", 1, 1024, 0, 0, 0, false, false},
}};

const TypeRules* RulesOf(const std::string& type) {
  for (const TypeRules& r : kRules) {
    if (type == r.type) return &r;
  }
  return nullptr;
}

absl::Status Error(const char* code, const std::string& message) {
  return WithAwsErrorCode(absl::InvalidArgumentError(message), code);
}

// Throughput bucket of an HDD type: MiB/s per TiB of size, capped.
Lane HddLane(uint64_t size_gib, double base_per_tib, double burst_per_tib, double max_mibps) {
  const double tib = static_cast<double>(size_gib) / 1024.0;
  Lane lane;
  lane.baseline = std::min(base_per_tib * tib, max_mibps) * kMiB;
  lane.burst = std::min(burst_per_tib * tib, max_mibps) * kMiB;
  lane.credits = tib * 1024.0 * 1024.0 * kMiB;  // 1 TiB of credits per TiB of size.
  return lane;
}

}  // namespace

absl::StatusOr<VolumeSpec> Normalize(const VolumeSpec& requested) {
  const TypeRules* rules = RulesOf(requested.type);
  if (rules == nullptr) {
    return Error("InvalidParameterValue",
                 absl::StrCat("Value (", requested.type,
                              ") for parameter volumeType is invalid. Valid types: gp2, gp3, "
                              "io1, io2, st1, sc1, standard."));
  }
  VolumeSpec spec = requested;
  if (spec.size_gib < rules->min_gib) {
    return Error("InvalidParameterValue",
                 absl::StrCat("Volume of ", spec.size_gib, "GiB is too small; minimum is ",
                              rules->min_gib, "GiB for ", spec.type, "."));
  }
  if (spec.size_gib > rules->max_gib) {
    return Error("InvalidParameterValue",
                 absl::StrCat("Volume of ", spec.size_gib, "GiB is too large; maximum is ",
                              rules->max_gib, "GiB for ", spec.type, "."));
  }
  if (spec.throughput != 0 && !rules->takes_throughput) {
    return Error(
        "InvalidParameterCombination",
        absl::StrCat("The parameter throughput is not supported for ", spec.type, " volumes."));
  }
  if (rules->max_iops == 0) {
    if (spec.iops != 0) {
      return Error(
          "InvalidParameterCombination",
          absl::StrCat("The parameter iops is not supported for ", spec.type, " volumes."));
    }
    // gp2 shows its baseline as its IOPS.
    if (spec.type == "gp2") spec.iops = std::clamp<uint64_t>(3 * spec.size_gib, 100, 16000);
    return spec;
  }
  if (spec.iops == 0) {
    if (rules->iops_required) {
      return Error("MissingParameter", absl::StrCat("The request must contain the parameter iops "
                                                    "for ",
                                                    spec.type, " volumes."));
    }
    spec.iops = rules->min_iops;  // gp3's baseline.
  }
  if (spec.iops < rules->min_iops || spec.iops > rules->max_iops) {
    return Error("InvalidParameterValue",
                 absl::StrCat("Volume iops of ", spec.iops, " is out of range for ", spec.type,
                              "; it must be from ", rules->min_iops, " to ", rules->max_iops, "."));
  }
  // gp3's baseline 3,000 is allowed on any size; only more is held to the ratio.
  const uint64_t ratio_floor = spec.type == "gp3" ? 3000 : 0;
  if (spec.iops > ratio_floor && spec.iops > rules->iops_per_gib * spec.size_gib) {
    return Error(
        "InvalidParameterValue",
        absl::StrFormat("Iops to volume size ratio of %.6f is too high; maximum is "
                        "%d.000000.",
                        static_cast<double>(spec.iops) / spec.size_gib, rules->iops_per_gib));
  }
  if (spec.type == "gp3") {
    if (spec.throughput == 0) spec.throughput = 125;
    if (spec.throughput < 125 || spec.throughput > 1000) {
      return Error("InvalidParameterValue",
                   absl::StrCat("Throughput of ", spec.throughput,
                                " MiB/s is out of range for gp3; it must be from 125 to 1000."));
    }
    if (spec.throughput > 125 && spec.throughput * 4 > spec.iops) {
      return Error("InvalidParameterValue",
                   absl::StrFormat("Throughput (MiBps) to iops ratio of %.6f is too high; "
                                   "maximum is 0.250000 MiBps per iops.",
                                   static_cast<double>(spec.throughput) / spec.iops));
    }
  }
  return spec;
}

absl::StatusOr<VolumeSpec> NormalizeForBytes(const std::string& type, uint64_t size_bytes,
                                             uint64_t iops, uint64_t throughput) {
  constexpr uint64_t kGiB = uint64_t{1} << 30;
  return Normalize({type, std::max<uint64_t>(1, (size_bytes + kGiB - 1) / kGiB), iops, throughput});
}

Limits LimitsOf(const VolumeSpec& spec) {
  Limits l;
  l.io_unit_bytes = kSsdUnitBytes;
  const auto flat = [](double rate) { return Lane{rate, rate, 0}; };
  const double iops = static_cast<double>(spec.iops);
  if (spec.type == "gp3") {
    l.units = flat(iops);
    l.bytes = flat(static_cast<double>(spec.throughput) * kMiB);
  } else if (spec.type == "gp2") {
    l.units = flat(iops);
    if (spec.iops < 3000) l.units = Lane{iops, 3000, 5.4e6};
    l.bytes = flat((spec.size_gib <= 170 ? 128.0 : 250.0) * kMiB);
  } else if (spec.type == "io1") {
    l.units = flat(iops);
    l.bytes = flat(std::min(iops * 0.25, spec.iops > 32000 ? 1000.0 : 500.0) * kMiB);
  } else if (spec.type == "io2") {
    l.units = flat(iops);
    l.bytes = flat(std::min(iops * 0.25, 4000.0) * kMiB);
  } else {
    // HDD: throughput is the limit; the units lane holds 1 MiB units to the same rates, so a
    // small random I/O spends a whole MiB of the budget.
    l.io_unit_bytes = kHddUnitBytes;
    l.merges_sequential = true;
    if (spec.type == "st1") {
      l.bytes = HddLane(spec.size_gib, 40, 250, 500);
    } else if (spec.type == "sc1") {
      l.bytes = HddLane(spec.size_gib, 12, 80, 250);
    } else {
      l.bytes = flat(90 * kMiB);
    }
    l.units = spec.type == "standard"
                  ? flat(200)
                  : Lane{l.bytes.baseline / kMiB, l.bytes.burst / kMiB, l.bytes.credits / kMiB};
  }
  return l;
}

}  // namespace strata::qos

namespace strata {

absl::Status CheckVolumeType(const std::string& volume_type, uint64_t size_bytes, uint64_t iops,
                             uint64_t throughput) {
  return qos::NormalizeForBytes(volume_type, size_bytes, iops, throughput).status();
}

}  // namespace strata
