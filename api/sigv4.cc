#include "sigv4.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include <algorithm>
#include <cstdlib>
#include <ctime>
#include <variant>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace strata::api {
namespace {

std::string Hmac(absl::string_view key, absl::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), out, &len);
  return std::string(reinterpret_cast<char*>(out), len);
}

// Constant-time comparison, so a signature cannot be guessed byte by byte from timing.
bool SafeEqual(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

bool ParseAmzDate(const std::string& s, int64_t& unix_seconds) {
  // YYYYMMDD'T'HHMMSS'Z'
  if (s.size() != 16 || s[8] != 'T' || s[15] != 'Z') return false;
  tm t{};
  if (strptime(s.c_str(), "%Y%m%dT%H%M%SZ", &t) == nullptr) return false;
  unix_seconds = timegm(&t);
  return true;
}

}  // namespace

std::string UriEncode(absl::string_view s, bool keep_slash) {
  std::string out;
  for (unsigned char c : s) {
    if (absl::ascii_isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' ||
        (keep_slash && c == '/')) {
      out.push_back(static_cast<char>(c));
    } else {
      absl::StrAppend(
          &out, "%",
          absl::AsciiStrToUpper(absl::BytesToHexString(std::string(1, static_cast<char>(c)))));
    }
  }
  return out;
}

bool UriDecode(absl::string_view s, bool plus_is_space, std::string& out) {
  out.clear();
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%') {
      if (i + 2 >= s.size()) return false;
      if (!absl::ascii_isxdigit(s[i + 1]) || !absl::ascii_isxdigit(s[i + 2])) return false;
      out.push_back(static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16)));
      i += 2;
    } else if (plus_is_space && s[i] == '+') {
      out.push_back(' ');
    } else {
      out.push_back(s[i]);
    }
  }
  return true;
}

std::string Sha256Hex(absl::string_view data) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest);
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<char*>(digest), sizeof(digest)));
}

absl::StatusOr<SigV4Authorization> ParseAuthorization(const std::string& header) {
  absl::string_view rest = header;
  if (!absl::ConsumePrefix(&rest, "AWS4-HMAC-SHA256 ")) {
    return absl::InvalidArgumentError("only AWS4-HMAC-SHA256 signatures are supported");
  }
  SigV4Authorization auth;
  for (absl::string_view part : absl::StrSplit(rest, ',')) {
    part = absl::StripAsciiWhitespace(part);
    if (absl::ConsumePrefix(&part, "Credential=")) {
      std::vector<std::string> scope = absl::StrSplit(part, '/');
      if (scope.size() != 5 || scope[4] != "aws4_request") {
        return absl::InvalidArgumentError("malformed credential scope");
      }
      auth.access_key_id = scope[0];
      auth.date = scope[1];
      auth.region = scope[2];
      auth.service = scope[3];
    } else if (absl::ConsumePrefix(&part, "SignedHeaders=")) {
      auth.signed_headers = absl::StrSplit(part, ';');
    } else if (absl::ConsumePrefix(&part, "Signature=")) {
      auth.signature = std::string(part);
    }
  }
  if (auth.access_key_id.empty() || auth.signed_headers.empty() || auth.signature.empty()) {
    return absl::InvalidArgumentError(
        "Authorization needs Credential, SignedHeaders and Signature");
  }
  return auth;
}

std::string CanonicalRequest(const HttpRequest& request,
                             const std::vector<std::string>& signed_headers,
                             const std::string& payload_hash) {
  // Query: decode each pair, re-encode strictly, sort.
  std::vector<std::pair<std::string, std::string>> params;
  for (absl::string_view pair : absl::StrSplit(request.query, '&', absl::SkipEmpty())) {
    std::vector<std::string> kv = absl::StrSplit(pair, absl::MaxSplits('=', 1));
    std::string k, v;
    UriDecode(kv[0], false, k);
    if (kv.size() > 1) UriDecode(kv[1], false, v);
    params.emplace_back(UriEncode(k, false), UriEncode(v, false));
  }
  std::sort(params.begin(), params.end());
  std::vector<std::string> query_parts;
  for (const auto& [k, v] : params) query_parts.push_back(absl::StrCat(k, "=", v));
  std::string headers;
  for (const std::string& name : signed_headers) {
    // Sequential spaces fold to one, as SigV4 asks.
    std::string value = request.Header(name);
    std::string folded;
    for (char c : absl::StripAsciiWhitespace(value)) {
      if (c == ' ' && !folded.empty() && folded.back() == ' ') continue;
      folded.push_back(c);
    }
    absl::StrAppend(&headers, name, ":", folded, "\n");
  }
  // Non-S3 services sign the path encoded once more (botocore does the same). Segment by
  // segment: a slash sent encoded (%2F, as in an ARN that is one segment) stays encoded.
  std::vector<std::string> segments;
  for (absl::string_view sent : absl::StrSplit(request.path, '/')) {
    std::string decoded;
    UriDecode(sent, false, decoded);
    segments.push_back(UriEncode(UriEncode(decoded, false), false));
  }
  return absl::StrCat(request.method, "\n", absl::StrJoin(segments, "/"), "\n",
                      absl::StrJoin(query_parts, "&"), "\n", headers, "\n",
                      absl::StrJoin(signed_headers, ";"), "\n", payload_hash);
}

std::string Sign(const std::string& secret_access_key, const std::string& amz_date,
                 const SigV4Authorization& auth, const std::string& canonical_request) {
  const std::string scope =
      absl::StrCat(auth.date, "/", auth.region, "/", auth.service, "/aws4_request");
  const std::string to_sign =
      absl::StrCat("AWS4-HMAC-SHA256\n", amz_date, "\n", scope, "\n", Sha256Hex(canonical_request));
  std::string key = Hmac("AWS4" + secret_access_key, auth.date);
  key = Hmac(key, auth.region);
  key = Hmac(key, auth.service);
  key = Hmac(key, "aws4_request");
  return absl::BytesToHexString(Hmac(key, to_sign));
}

std::variant<SigV4Authorization, AuthFailure> Verify(const HttpRequest& request,
                                                     const SecretLookup& secret_for,
                                                     int64_t now_unix_seconds) {
  const std::string header = request.Header("authorization");
  if (header.empty()) {
    return AuthFailure{"AuthFailure",
                       "the request is not signed: sign it with AWS Signature Version 4"};
  }
  absl::StatusOr<SigV4Authorization> auth = ParseAuthorization(header);
  if (!auth.ok()) return AuthFailure{"AuthFailure", std::string(auth.status().message())};
  const std::string amz_date = request.Header("x-amz-date");
  int64_t when = 0;
  if (!ParseAmzDate(amz_date, when) || amz_date.substr(0, 8) != auth->date) {
    return AuthFailure{"AuthFailure",
                       "X-Amz-Date is missing or does not match the credential scope"};
  }
  if (std::llabs(now_unix_seconds - when) > kMaxClockSkewSeconds) {
    return AuthFailure{"AuthFailure",
                       "the request time is more than 15 minutes from the server's: "
                       "check the client's clock (replays are refused)"};
  }
  auth->signed_at = when;
  if (std::find(auth->signed_headers.begin(), auth->signed_headers.end(), "host") ==
      auth->signed_headers.end()) {
    return AuthFailure{"AuthFailure", "the Host header must be signed"};
  }
  absl::StatusOr<std::string> secret = secret_for(auth->access_key_id);
  if (!secret.ok()) {
    return AuthFailure{"InvalidClientTokenId",
                       "the access key id is not known to this Strata store"};
  }
  std::string payload_hash = request.Header("x-amz-content-sha256");
  if (payload_hash == "UNSIGNED-PAYLOAD" && auth->service != "ebs") {
    // As on AWS, only the upload-style calls (EBS direct PutSnapshotBlock) may leave their
    // body out of the signature: an EC2 or KMS request's body is its parameters.
    return AuthFailure{"AuthFailure", absl::StrCat("UNSIGNED-PAYLOAD is refused for ",
                                                   auth->service, " requests: sign the body")};
  }
  // EBS direct's UNSIGNED-PAYLOAD is signed as the literal; the block is checked against its
  // own x-amz-Checksum instead.
  if (payload_hash.empty()) {
    payload_hash = Sha256Hex(request.body);
  } else if (payload_hash != "UNSIGNED-PAYLOAD" && payload_hash != Sha256Hex(request.body)) {
    return AuthFailure{"SignatureDoesNotMatch", "the body does not match X-Amz-Content-Sha256"};
  }
  const std::string expected =
      Sign(*secret, amz_date, *auth, CanonicalRequest(request, auth->signed_headers, payload_hash));
  if (!SafeEqual(expected, absl::AsciiStrToLower(auth->signature))) {
    return AuthFailure{
        "SignatureDoesNotMatch",
        "the request signature does not match: check the secret key and signing method"};
  }
  return *std::move(auth);
}

}  // namespace strata::api
