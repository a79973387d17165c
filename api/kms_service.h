#pragma once
// The KMS JSON API (awsJson1_1: POST with X-Amz-Target "TrentService.OPERATION"): keys, aliases,
// states, rotation, policies, grants and the cryptographic operations, over the region's Kms.
// Blobs travel base64-encoded, times as epoch seconds. The only Status -> KMS error mapping.

#include <string>

#include "http_server.h"
#include "strata/store.h"

namespace strata::api {

class KmsService {
 public:
  HttpResponse Handle(const HttpRequest& request, const Account& account, Region& region);
  static HttpResponse Error(int status, const std::string& type, const std::string& message);
};

}  // namespace strata::api
