#pragma once
// What every EC2 Query call shares: errors and their mapping from engine statuses, times,
// ownership, tag specifications, pagination and filters.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "common/xml.h"
#include "query.h"
#include "strata/store.h"

namespace strata::api {

using XmlWriter = xml::Writer;

inline constexpr uint64_t kGiB = 1ull << 30;
inline constexpr char kXmlns[] = "http://ec2.amazonaws.com/doc/2016-11-15/";

// An error as EC2 reports it: HTTP status, code, message.
struct Ec2Error {
  int status;
  std::string code;
  std::string message;
};

using Result = std::variant<std::string, Ec2Error>;  // Response body XML, or an error.

std::string RequestId();
std::string IsoTime(uint64_t micros);
// Parses EC2's ISO 8601 time ("2026-01-02T03:04:05Z", optional fraction); kInvalidArgument.
absl::StatusOr<uint64_t> ParseIsoTime(const std::string& text);
uint64_t GiBCeil(uint64_t bytes);
uint64_t NowMicros();

// Maps an engine status to EC2's error for a call about `kind` ("Volume", "Snapshot"). An AWS
// code the status carries wins.
Ec2Error FromStatus(const absl::Status& s, const std::string& kind);
Ec2Error Invalid(const std::string& message);
// InvalidParameterValue unless `region` is served by this store or is one of its peers.
std::optional<Ec2Error> CheckSourceRegion(Store& store, const std::string& region);
Ec2Error Missing(const std::string& name);

// Owner of a resource; resources from before accounts belong to the first (admin) account.
bool Owns(const Account& account, const std::string& owner, Store& store);

// TagSpecification.N.ResourceType / .Tag.M.Key / .Tag.M.Value for `resource_type`.
absl::StatusOr<std::map<std::string, std::string>> TagSpecs(const QueryParams& p,
                                                            const std::string& resource_type);
// The same for calls that tag several kinds of resources (RunInstances: instance, volume).
absl::StatusOr<std::map<std::string, std::map<std::string, std::string>>> TagSpecsByType(
    const QueryParams& p, const std::vector<std::string>& resource_types);
void WriteTags(XmlWriter& x, const std::map<std::string, std::string>& tags);

// Page of `count` items from NextToken (an index) with MaxResults, EC2 style.
struct Page {
  size_t begin = 0, end = 0;
  std::string next_token;
};
absl::StatusOr<Page> Paginate(const QueryParams& p, size_t count, int64_t min_max, int64_t max_max);

// A resource's filterable values by EC2 filter name. With its tags (tag:KEY, tag-key,
// tag-value) this is the one mechanism behind every Describe call's Filter.N. A name with
// several values (block-device-mapping.snapshot-id) is listed once per value as "name\tvalue".
using Facets = std::multimap<std::string, std::string>;

// True when the resource matches every filter; kInvalidArgument names an unknown filter.
absl::StatusOr<bool> MatchesFilters(const std::vector<Filter>& filters, const Facets& facets,
                                    const std::map<std::string, std::string>& tags);

}  // namespace strata::api
