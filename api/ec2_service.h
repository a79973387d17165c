#pragma once
// The EC2 Query API subset over the engine: parses the request, sends the action to the family
// of calls that has it (ec2_call.h), and turns its result into an EC2 response.

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "ec2_call.h"
#include "http_server.h"
#include "query.h"
#include "strata/store.h"

namespace strata::api {

class Ec2Service {
 public:
  // `store` must outlive the service. Thread-safe.
  Ec2Service(Store& store, Ec2Options options) : store_(store), options_(std::move(options)) {}

  // Handles one authenticated request of `account` in `region`.
  HttpResponse Handle(const HttpRequest& request, const Account& account, Region& region);

  // An EC2 error response.
  static HttpResponse Error(int status, const std::string& code, const std::string& message);

 private:
  // Runs `action` in the family of calls that has it.
  Result Run(const HttpRequest& request, const Account& account, Region& region,
             const QueryParams& p, const std::string& action);

  Store& store_;
  const Ec2Options options_;
  ClientTokens volume_tokens_;
  StoreImageTasks store_tasks_;
};

}  // namespace strata::api
