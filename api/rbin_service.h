#pragma once
// The Recycle Bin's rules API (rbin, REST-JSON): CreateRule, GetRule, ListRules, UpdateRule,
// DeleteRule, LockRule, UnlockRule and the rules' tags, over Region::recycle_bin(). What the bin
// holds is listed and restored through EC2 (ec2_protection_calls.cc). docs/data-protection.md.

#include <string>

#include "http_server.h"
#include "strata/store.h"

namespace strata::api {

class RbinService {
 public:
  HttpResponse Handle(const HttpRequest& request, const Account& account, Region& region);
  static HttpResponse Error(int status, const std::string& type, const std::string& message);
};

}  // namespace strata::api
