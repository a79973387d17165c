#pragma once
// AWS Signature Version 4 verification (header form), as the aws CLI and SDKs sign requests.

#include <functional>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "http_server.h"

namespace strata::api {

struct SigV4Authorization {
  std::string access_key_id;
  std::string date;  // YYYYMMDD of the credential scope.
  std::string region;
  std::string service;
  std::vector<std::string> signed_headers;  // Lowercase, sorted as sent.
  std::string signature;                    // Lowercase hex.
  int64_t signed_at = 0;                    // X-Amz-Date in unix seconds (set by Verify).
};

// How a request failed authentication: the AWS error code and a message.
struct AuthFailure {
  std::string code;  // AuthFailure, SignatureDoesNotMatch, InvalidClientTokenId, ...
  std::string message;
};

// Parses "AWS4-HMAC-SHA256 Credential=AK/20260101/us-east-1/ec2/aws4_request,
// SignedHeaders=host;x-amz-date, Signature=hex".
absl::StatusOr<SigV4Authorization> ParseAuthorization(const std::string& header);

// The canonical request of SigV4 for `request`.
std::string CanonicalRequest(const HttpRequest& request,
                             const std::vector<std::string>& signed_headers,
                             const std::string& payload_hash);

// The hex signature of `canonical_request` with `secret_access_key`.
std::string Sign(const std::string& secret_access_key, const std::string& amz_date,
                 const SigV4Authorization& auth, const std::string& canonical_request);

std::string Sha256Hex(absl::string_view data);

// How far X-Amz-Date may be from the server's clock, either way.
constexpr int64_t kMaxClockSkewSeconds = 15 * 60;

// Verifies `request`: returns its parsed authorization, or the failure. `secret_for` maps an
// access key to its secret (kNotFound if unknown). `now_unix_seconds` is the server's clock;
// requests dated more than 15 minutes away from it are refused.
using SecretLookup = std::function<absl::StatusOr<std::string>(const std::string& access_key_id)>;
std::variant<SigV4Authorization, AuthFailure> Verify(const HttpRequest& request,
                                                     const SecretLookup& secret_for,
                                                     int64_t now_unix_seconds);

// Percent-encodes as SigV4 requires (unreserved characters kept; space as %20).
std::string UriEncode(absl::string_view s, bool keep_slash);
// Decodes %XX and (when `plus_is_space`) '+'. False on a malformed escape.
bool UriDecode(absl::string_view s, bool plus_is_space, std::string& out);

}  // namespace strata::api
