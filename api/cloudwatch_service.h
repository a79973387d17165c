#pragma once
// CloudWatch's metrics of EBS volumes (namespace AWS/EBS, dimension VolumeId) over the JSON
// protocol the SDKs use for CloudWatch (awsJson1_0: POST with X-Amz-Target
// "GraniteServiceVersion20100801.OPERATION", times as epoch seconds): GetMetricData,
// GetMetricStatistics and ListMetrics, made from the samples each open volume's limiter keeps
// (docs/qos.md). A volume the caller does not own, or one that is not open on this node, has
// no data, as CloudWatch answers for a metric it does not hold.

#include <string>

#include "http_server.h"
#include "strata/store.h"

namespace strata::api {

class CloudWatchService {
 public:
  HttpResponse Handle(const HttpRequest& request, const Account& account, Store& store,
                      Region& region);
  // `code` is CloudWatch's (InvalidParameterValue, MissingParameter, ...).
  static HttpResponse Error(int status, const std::string& code, const std::string& message);
};

}  // namespace strata::api
