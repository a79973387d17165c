// ParseLinkModel and FormatLinkModel (strata/transfer.h).

#include <cmath>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "strata/transfer.h"

namespace strata {
namespace {

absl::Status Bad(absl::string_view key, absl::string_view value, absl::string_view want) {
  return absl::InvalidArgumentError(
      absl::StrCat("link setting ", key, "=", value, ": expected ", want));
}

// "100MB" (per second, decimal units) -> bytes per second.
bool ParseRate(absl::string_view v, uint64_t& out) {
  double scale = 1;
  for (const auto& [suffix, s] :
       {std::pair{"GB", 1e9}, std::pair{"MB", 1e6}, std::pair{"KB", 1e3}, std::pair{"B", 1.0}}) {
    if (absl::EndsWith(v, suffix)) {
      v.remove_suffix(absl::string_view(suffix).size());
      scale = s;
      break;
    }
  }
  double n = 0;
  if (!absl::SimpleAtod(v, &n) || !(n >= 0) || n * scale > 1e13) return false;
  out = static_cast<uint64_t>(std::llround(n * scale));
  return true;
}

// "70ms" or "0.07s" -> milliseconds.
bool ParseMillis(absl::string_view v, uint32_t& out) {
  double scale = 1;
  if (absl::EndsWith(v, "ms")) {
    v.remove_suffix(2);
  } else if (absl::EndsWith(v, "s")) {
    v.remove_suffix(1);
    scale = 1000;
  }
  double n = 0;
  if (!absl::SimpleAtod(v, &n) || !(n >= 0) || n * scale > 600'000) return false;
  out = static_cast<uint32_t>(std::llround(n * scale));
  return true;
}

bool ParseRateShare(absl::string_view v, double& out) {
  return absl::SimpleAtod(v, &out) && out >= 0 && out <= 0.5;
}

}  // namespace

absl::StatusOr<LinkModel> ParseLinkModel(absl::string_view spec, LinkModel link) {
  for (absl::string_view item : absl::StrSplit(spec, ',', absl::SkipWhitespace())) {
    const std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(item, '=');
    const absl::string_view key = kv.first;
    const absl::string_view value = kv.second;
    if (key == "bandwidth") {
      if (!ParseRate(value, link.bandwidth_bytes_per_second) ||
          link.bandwidth_bytes_per_second == 0) {
        return Bad(key, value, "a rate above 0 such as 100MB (bytes per second)");
      }
    } else if (key == "region") {
      if (!ParseRate(value, link.region_bytes_per_second)) {
        return Bad(key, value, "a rate such as 200MB, or 0 for no limit");
      }
    } else if (key == "rtt") {
      if (!ParseMillis(value, link.rtt_ms)) return Bad(key, value, "a time such as 70ms");
    } else if (key == "jitter") {
      if (!ParseMillis(value, link.jitter_ms)) return Bad(key, value, "a time such as 5ms");
    } else if (key == "corrupt") {
      if (!ParseRateShare(value, link.corrupt_rate)) return Bad(key, value, "a share 0 to 0.5");
    } else if (key == "drop") {
      if (!ParseRateShare(value, link.drop_rate)) return Bad(key, value, "a share 0 to 0.5");
    } else if (key == "streams") {
      if (!absl::SimpleAtoi(value, &link.streams) || link.streams < 1 || link.streams > 64) {
        return Bad(key, value, "1 to 64");
      }
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown link setting \"", key,
                       "\" (known: bandwidth, rtt, jitter, corrupt, drop, streams, region)"));
    }
  }
  return link;
}

std::string FormatLinkModel(const LinkModel& link) {
  std::string out = absl::StrFormat("bandwidth=%gMB,rtt=%ums,jitter=%ums,streams=%u",
                                    link.bandwidth_bytes_per_second / 1e6, link.rtt_ms,
                                    link.jitter_ms, link.streams);
  if (link.corrupt_rate > 0) absl::StrAppendFormat(&out, ",corrupt=%g", link.corrupt_rate);
  if (link.drop_rate > 0) absl::StrAppendFormat(&out, ",drop=%g", link.drop_rate);
  if (link.region_bytes_per_second > 0) {
    absl::StrAppendFormat(&out, ",region=%gMB", link.region_bytes_per_second / 1e6);
  }
  return out;
}

}  // namespace strata
