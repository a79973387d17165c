// Fuzz target for the control plane's request parsers: HTTP framing, EC2 Query parameters (with
// filters and tag specifications), SigV4 Authorization headers and canonicalization.
// Built with clang -fsanitize=fuzzer it is a libFuzzer target; otherwise fuzz_driver.cc runs it
// on seeded random mutations of a corpus (as a ctest, and under ASan+UBSan in CI).

#include <cstddef>
#include <cstdint>
#include <string>

#include "ebs_service.h"
#include "http_server.h"
#include "query.h"
#include "request.h"
#include "sigv4.h"

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
  (void)ParseStartSnapshot(input);  // The REST-JSON body of the EBS direct StartSnapshot.
  // NBD request headers against a small export.
  using namespace strata::nbd;
  for (size_t at = 0; at + kRequestHeaderBytes <= size && at < 8 * kRequestHeaderBytes;
       at += kRequestHeaderBytes) {
    auto bytes = std::as_bytes(std::span(data + at, kRequestHeaderBytes));
    auto decoded = DecodeRequest(
        std::span<const std::byte, kRequestHeaderBytes>(bytes.data(), kRequestHeaderBytes));
    if (const Request* r = std::get_if<Request>(&decoded)) {
      auto checked = ValidateRequest(*r, {1 << 20, (at / kRequestHeaderBytes) % 2 == 1});
      if (const Request* ok = std::get_if<Request>(&checked)) {
        // A valid request is within the export and aligned.
        if (ok->offset + ok->length > (1u << 20) || ok->offset % kMinBlockBytes != 0)
          __builtin_trap();
      }
    }
  }
  return 0;
}
