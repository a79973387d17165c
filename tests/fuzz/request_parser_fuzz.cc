// Fuzz target for the control plane's request parsers: HTTP framing, EC2 Query parameters (with
// filters and tag specifications), SigV4 Authorization headers and canonicalization.
// Built with clang -fsanitize=fuzzer it is a libFuzzer target; otherwise fuzz_driver.cc runs it
// on seeded random mutations of a corpus (as a ctest, and under ASan+UBSan in CI).

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common/xml.h"
#include "ebs_service.h"
#include "http_server.h"
#include "query.h"
#include "sigv4.h"

// Seeds for tests/fuzz/fuzz_driver.cc.
std::vector<std::string> FuzzSeeds() {
  return {
      "POST / HTTP/1.1\r\nHost: 127.0.0.1:8150\r\nX-Amz-Date: 20260101T000000Z\r\nAuthorization: "
      "AWS4-HMAC-SHA256 Credential=AKIA/20260101/local-1/ec2/aws4_request, "
      "SignedHeaders=host;x-amz-date, "
      "Signature=abcd\r\nContent-Length: 30\r\n\r\nAction=DescribeVolumes&MaxResults=5",
      "GET /snapshots/snap-1/blocks?maxResults=100&pageToken=3 HTTP/1.1\r\nHost: h\r\n\r\n",
      "Action=CreateVolume&Size=1&TagSpecification.1.ResourceType=volume&TagSpecification.1.Tag.1."
      "Key=a"
      "&Filter.1.Name=tag%3AName&Filter.1.Value.1=w%2A&VolumeId.1=vol-1",
      "AWS4-HMAC-SHA256 Credential=a/b/c/d/aws4_request,SignedHeaders=host,Signature=00",
      R"({"VolumeSize": 8, "ParentSnapshotId": "snap-1", "Tags": [{"Key": "a", "Value": "b"}], "Timeout": 60})",
  };
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace strata::api;
  const std::string input(reinterpret_cast<const char*>(data), size);
  HttpServerOptions options;
  options.max_header_bytes = 4096;
  options.max_body_bytes = 4096;
  std::string buffer = input;
  // Bounded: each round consumes bytes or stops.
  for (int i = 0; i < 16; ++i) {
    auto parsed = HttpServer::ParseRequest(buffer, options);
    if (!parsed.ok() || !parsed->has_value()) break;
    const HttpRequest& request = **parsed;
    (void)CanonicalRequest(request, {"host", "x-amz-date"}, "UNSIGNED-PAYLOAD");
    (void)ParseAuthorization(request.Header("authorization"));
    auto lookup = [](const std::string&) -> absl::StatusOr<std::string> {
      return std::string("k");
    };
    (void)Verify(request, lookup, 1767225600);
  }
  auto params = QueryParams::Parse(input);
  if (params.ok()) {
    (void)ParseFilters(*params);
    (void)params->StructList("TagSpecification");
    (void)params->GetInt("Size");
    for (const auto& [k, v] : params->all()) (void)WildcardMatch(k, v);
  }
  (void)ParseAuthorization(input);
  (void)strata::xml::Parse(input);  // Bundle manifests and API replies (common/xml.h).
  (void)ParseStartSnapshot(input);  // The REST-JSON body of the EBS direct StartSnapshot.
  return 0;
}
