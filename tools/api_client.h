#pragma once
// A small client of stratad's API for the strata CLI: signs EC2 Query and CloudWatch JSON
// requests with SigV4 as the aws CLI does, sends them over HTTP/1.1, and turns EC2's XML
// responses into JSON.

#include <map>
#include <string>

#include "absl/status/statusor.h"

namespace strata::tools {

struct ApiEndpoint {
  std::string url = "http://127.0.0.1:8150";  // http://HOST:PORT
  std::string region = "local-1";
  std::string access_key_id;
  std::string secret_access_key;
};

// Fills credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, else from
// DIR/credentials ([default]); the region from --region, AWS_DEFAULT_REGION or DIR/config.
absl::StatusOr<ApiEndpoint> LoadEndpoint(const std::string& data_dir, const std::string& url,
                                         const std::string& region);

// The outcome of one call: the HTTP status, and the response as JSON (errors too:
// {"Code": ..., "Message": ...}).
struct ApiResult {
  int http_status = 0;
  std::string json;
  std::string error_code;  // Empty on success.
  std::string error_message;
};

// Calls EC2 action `action` with Query `params`. kUnavailable when stratad cannot be reached.
absl::StatusOr<ApiResult> CallEc2(const ApiEndpoint& endpoint, const std::string& action,
                                  const std::map<std::string, std::string>& params);

// Calls CloudWatch's `operation` (JSON protocol) with the JSON `body`; the response is JSON.
absl::StatusOr<ApiResult> CallCloudWatch(const ApiEndpoint& endpoint, const std::string& operation,
                                         const std::string& body);

// Converts an EC2 XML response to JSON: elements become keys, "item" children become lists,
// text becomes strings. Exposed for tests.
absl::StatusOr<std::string> Ec2XmlToJson(const std::string& xml);

}  // namespace strata::tools
