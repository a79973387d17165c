#include "cloudwatch_service.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <optional>
#include <variant>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "ec2_common.h"
#include "nlohmann/json.hpp"

namespace strata::api {
namespace {

using json = nlohmann::json;

constexpr char kTargetPrefix[] = "GraniteServiceVersion20100801.";
constexpr char kNamespace[] = "AWS/EBS";
constexpr char kDimension[] = "VolumeId";

struct CloudWatchError {
  int status = 400;
  std::string code;
  std::string message;
};

CloudWatchError InvalidValue(const std::string& message) {
  return {400, "InvalidParameterValue", message};
}

// One AWS/EBS metric: its unit, and its value in one sample.
struct MetricDef {
  const char* unit;
  std::function<double(const VolumeIoSample&)> value;
  bool burst_only = false;  // BurstBalance: only volumes with a credit bucket have it.
};

const std::map<std::string, MetricDef>& Metrics() {
  static const auto* metrics = new std::map<std::string, MetricDef>{
      {"VolumeReadOps", {"Count", [](const VolumeIoSample& s) { return double(s.read_ops); }}},
      {"VolumeWriteOps", {"Count", [](const VolumeIoSample& s) { return double(s.write_ops); }}},
      {"VolumeReadBytes", {"Bytes", [](const VolumeIoSample& s) { return double(s.read_bytes); }}},
      {"VolumeWriteBytes",
       {"Bytes", [](const VolumeIoSample& s) { return double(s.write_bytes); }}},
      {"VolumeTotalReadTime",
       {"Seconds", [](const VolumeIoSample& s) { return double(s.read_time_ns) / 1e9; }}},
      {"VolumeTotalWriteTime",
       {"Seconds", [](const VolumeIoSample& s) { return double(s.write_time_ns) / 1e9; }}},
      {"VolumeIdleTime",
       {"Seconds", [](const VolumeIoSample& s) { return double(s.idle_seconds); }}},
      // Requests outstanding on average: their summed time over the sample's span.
      {"VolumeQueueLength",
       {"Count",
        [](const VolumeIoSample& s) {
          return double(s.read_time_ns + s.write_time_ns) / 1e9 / std::max<uint32_t>(s.seconds, 1);
        }}},
      {"BurstBalance", {"Percent", [](const VolumeIoSample& s) { return s.burst_balance; }, true}},
  };
  return *metrics;
}

// The statistics of the samples within one period.
struct Aggregate {
  double sum = 0, minimum = 0, maximum = 0;
  uint64_t count = 0;
  void Add(double v) {
    minimum = count == 0 ? v : std::min(minimum, v);
    maximum = count == 0 ? v : std::max(maximum, v);
    sum += v;
    ++count;
  }
  std::optional<double> Stat(const std::string& stat) const {
    if (stat == "Sum") return sum;
    if (stat == "Average") return sum / static_cast<double>(count);
    if (stat == "Minimum") return minimum;
    if (stat == "Maximum") return maximum;
    if (stat == "SampleCount") return static_cast<double>(count);
    return std::nullopt;
  }
};

bool KnownStat(const std::string& stat) {
  return stat == "Sum" || stat == "Average" || stat == "Minimum" || stat == "Maximum" ||
         stat == "SampleCount";
}

// A metric named by a request: namespace, name and dimensions.
struct MetricRef {
  std::string metric_name;
  std::string volume_id;  // Empty when the dimensions name no single volume.
};

class CloudWatchCall {
 public:
  CloudWatchCall(const HttpRequest& request, const Account& account, Store& store, Region& region)
      : request_(request), account_(account), store_(store), region_(region) {}

  HttpResponse Run() {
    const std::string target = request_.Header("x-amz-target");
    if (!absl::StartsWith(target, kTargetPrefix)) {
      return CloudWatchService::Error(400, "InvalidAction",
                                      "expected X-Amz-Target GraniteServiceVersion20100801.*");
    }
    const std::string op = target.substr(sizeof(kTargetPrefix) - 1);
    body_ = json::parse(request_.body.empty() ? "{}" : request_.body, nullptr, false);
    if (body_.is_discarded() || !body_.is_object()) {
      return CloudWatchService::Error(400, "SerializationException",
                                      "the request body is not a JSON object");
    }
    static const std::map<std::string, std::variant<CloudWatchError, json> (CloudWatchCall::*)()>
        kOps = {
            {"GetMetricData", &CloudWatchCall::GetMetricData},
            {"GetMetricStatistics", &CloudWatchCall::GetMetricStatistics},
            {"ListMetrics", &CloudWatchCall::ListMetrics},
        };
    auto it = kOps.find(op);
    if (it == kOps.end()) {
      return CloudWatchService::Error(
          400, "InvalidAction", absl::StrCat("CloudWatch's ", op, " is not served by Strata"));
    }
    std::variant<CloudWatchError, json> out;
    try {
      out = (this->*it->second)();
    } catch (const json::exception& e) {  // A field of a type the checks above did not expect.
      out = CloudWatchError{400, "SerializationException", e.what()};
    }
    if (const CloudWatchError* e = std::get_if<CloudWatchError>(&out)) {
      return CloudWatchService::Error(e->status, e->code, e->message);
    }
    return HttpResponse{
        200, {{"Content-Type", "application/x-amz-json-1.0"}}, std::get<json>(out).dump()};
  }

 private:
  // A required epoch-seconds field of `object`.
  std::variant<CloudWatchError, double> Time(const json& object, const char* name) {
    if (!object.contains(name)) return CloudWatchError{400, "MissingParameter", name};
    // Epoch seconds (the SDKs send numbers in this protocol), taken within 1970 to the year
    // 5000: nothing is held outside it, and the conversion to whole seconds stays defined.
    if (!object[name].is_number()) {
      return InvalidValue(absl::StrCat(name, " must be a time (epoch seconds)"));
    }
    const double t = object[name].get<double>();
    return std::isnan(t) ? 0.0 : std::clamp(t, 0.0, 95'617'584'000.0);
  }

  std::variant<CloudWatchError, MetricRef> Metric(const json& metric) {
    if (!metric.is_object()) return InvalidValue("Metric must be an object");
    for (const char* field : {"Namespace", "MetricName"}) {
      if (!metric.contains(field)) return CloudWatchError{400, "MissingParameter", field};
      if (!metric[field].is_string()) return InvalidValue(absl::StrCat(field, " must be a string"));
    }
    MetricRef ref{metric["MetricName"].get<std::string>(), ""};
    if (metric["Namespace"].get<std::string>() != kNamespace) return ref;  // Not held: no data.
    const json dims = metric.value("Dimensions", json::array());
    if (!dims.is_array()) return InvalidValue("Dimensions must be a list");
    for (const json& d : dims) {
      if (!d.is_object() || !d.contains("Name") || !d["Name"].is_string() || !d.contains("Value") ||
          !d["Value"].is_string()) {
        return InvalidValue("each dimension is {\"Name\": string, \"Value\": string}");
      }
    }
    if (dims.size() == 1 && dims[0]["Name"].get<std::string>() == kDimension) {
      ref.volume_id = dims[0]["Value"].get<std::string>();
    }
    return ref;
  }

  // The samples of `ref` in [from, to), or none when the caller may not see them.
  std::vector<VolumeIoSample> Samples(const MetricRef& ref, int64_t from, int64_t to) {
    auto def = Metrics().find(ref.metric_name);
    if (ref.volume_id.empty() || def == Metrics().end()) return {};
    absl::StatusOr<VolumeInfo> info = region_.DescribeVolume(ref.volume_id);
    if (!info.ok() || info->elsewhere || !Owns(account_, info->owner, store_)) return {};
    absl::StatusOr<std::unique_ptr<Region::VolumePin>> pin = region_.PinVolume(ref.volume_id);
    if (!pin.ok()) return {};
    const IoLimiter& limiter = (*pin)->volume().limiter();
    if (def->second.burst_only && !limiter.Stats().has_burst_bucket) return {};
    return limiter.Samples(from, to);
  }

  // Periods of `period` seconds from `start`, each with its samples' statistics.
  std::map<int64_t, Aggregate> ByPeriod(const MetricRef& ref, int64_t start, int64_t end,
                                        int64_t period) {
    std::map<int64_t, Aggregate> out;
    auto def = Metrics().find(ref.metric_name);
    if (def == Metrics().end()) return out;
    for (const VolumeIoSample& s : Samples(ref, start, end)) {
      out[start + (s.start_second - start) / period * period].Add(def->second.value(s));
    }
    return out;
  }

  std::variant<CloudWatchError, std::pair<int64_t, int64_t>> Window() {
    std::variant<CloudWatchError, double> start = Time(body_, "StartTime");
    if (auto* e = std::get_if<CloudWatchError>(&start)) return *e;
    std::variant<CloudWatchError, double> end = Time(body_, "EndTime");
    if (auto* e = std::get_if<CloudWatchError>(&end)) return *e;
    const auto from = static_cast<int64_t>(std::floor(std::get<double>(start)));
    const auto to = static_cast<int64_t>(std::ceil(std::get<double>(end)));
    if (from >= to) return InvalidValue("StartTime must be before EndTime");
    return std::pair(from, to);
  }

  static std::variant<CloudWatchError, int64_t> Period(const json& object) {
    if (!object.contains("Period")) return CloudWatchError{400, "MissingParameter", "Period"};
    if (!object["Period"].is_number_integer() || object["Period"].get<int64_t>() < 1) {
      return InvalidValue("Period must be a whole number of seconds, at least 1");
    }
    return object["Period"].get<int64_t>();
  }

  std::variant<CloudWatchError, json> GetMetricData() {
    std::variant<CloudWatchError, std::pair<int64_t, int64_t>> window = Window();
    if (auto* e = std::get_if<CloudWatchError>(&window)) return *e;
    const auto [from, to] = std::get<std::pair<int64_t, int64_t>>(window);
    const json queries = body_.value("MetricDataQueries", json());
    if (!queries.is_array() || queries.empty()) {
      return CloudWatchError{400, "MissingParameter", "MetricDataQueries"};
    }
    if (queries.size() > 500) return InvalidValue("at most 500 MetricDataQueries");
    const json scan = body_.value("ScanBy", json("TimestampDescending"));
    if (scan != "TimestampDescending" && scan != "TimestampAscending") {
      return InvalidValue("ScanBy is TimestampDescending or TimestampAscending");
    }
    const bool ascending = scan == "TimestampAscending";
    json results = json::array();
    for (const json& q : queries) {
      if (!q.is_object() || !q.contains("Id") || !q["Id"].is_string()) {
        return CloudWatchError{400, "MissingParameter", "MetricDataQueries.Id"};
      }
      if (q.contains("Expression")) {
        return InvalidValue("metric math (Expression) is not supported by Strata; use MetricStat");
      }
      if (!q.contains("MetricStat") || !q["MetricStat"].is_object()) {
        return CloudWatchError{400, "MissingParameter", "MetricDataQueries.MetricStat"};
      }
      const json& stat = q["MetricStat"];
      std::variant<CloudWatchError, MetricRef> ref = Metric(stat.value("Metric", json()));
      if (auto* e = std::get_if<CloudWatchError>(&ref)) return *e;
      std::variant<CloudWatchError, int64_t> period = Period(stat);
      if (auto* e = std::get_if<CloudWatchError>(&period)) return *e;
      const std::string name =
          stat.value("Stat", json()).is_string() ? stat["Stat"].get<std::string>() : std::string();
      if (!KnownStat(name)) {
        return InvalidValue(absl::StrCat("Stat \"", name,
                                         "\" is not one of Sum, Average, Minimum, Maximum, "
                                         "SampleCount"));
      }
      if (q.contains("ReturnData") && q["ReturnData"].is_boolean() && !q["ReturnData"].get<bool>())
        continue;
      const MetricRef& metric = std::get<MetricRef>(ref);
      std::map<int64_t, Aggregate> periods = ByPeriod(metric, from, to, std::get<int64_t>(period));
      json times = json::array(), values = json::array();
      auto emit = [&](const auto& entry) {
        times.push_back(entry.first);
        values.push_back(*entry.second.Stat(name));
      };
      if (ascending) {
        std::for_each(periods.begin(), periods.end(), emit);
      } else {
        std::for_each(periods.rbegin(), periods.rend(), emit);
      }
      results.push_back({{"Id", q["Id"]},
                         {"Label", q.value("Label", json(metric.metric_name))},
                         {"Timestamps", times},
                         {"Values", values},
                         {"StatusCode", "Complete"}});
    }
    return json{{"MetricDataResults", results}, {"Messages", json::array()}};
  }

  std::variant<CloudWatchError, json> GetMetricStatistics() {
    std::variant<CloudWatchError, std::pair<int64_t, int64_t>> window = Window();
    if (auto* e = std::get_if<CloudWatchError>(&window)) return *e;
    const auto [from, to] = std::get<std::pair<int64_t, int64_t>>(window);
    std::variant<CloudWatchError, MetricRef> ref = Metric(body_);
    if (auto* e = std::get_if<CloudWatchError>(&ref)) return *e;
    std::variant<CloudWatchError, int64_t> period = Period(body_);
    if (auto* e = std::get_if<CloudWatchError>(&period)) return *e;
    if (body_.contains("ExtendedStatistics")) {
      return InvalidValue("ExtendedStatistics (percentiles) are not supported by Strata");
    }
    const json stats = body_.value("Statistics", json());
    if (!stats.is_array() || stats.empty()) {
      return CloudWatchError{400, "MissingParameter", "Statistics"};
    }
    for (const json& s : stats) {
      if (!s.is_string() || !KnownStat(s.get<std::string>())) {
        return InvalidValue(
            "each of Statistics is one of Sum, Average, Minimum, Maximum, SampleCount");
      }
    }
    const MetricRef& metric = std::get<MetricRef>(ref);
    auto def = Metrics().find(metric.metric_name);
    json points = json::array();
    for (const auto& [start, aggregate] : ByPeriod(metric, from, to, std::get<int64_t>(period))) {
      json point{{"Timestamp", start}, {"Unit", def->second.unit}};
      for (const json& s : stats) point[s.get<std::string>()] = *aggregate.Stat(s);
      points.push_back(point);
    }
    return json{{"Label", metric.metric_name}, {"Datapoints", points}};
  }

  std::variant<CloudWatchError, json> ListMetrics() {
    for (const char* field : {"Namespace", "MetricName"}) {
      if (body_.contains(field) && !body_[field].is_string()) {
        return InvalidValue(absl::StrCat(field, " must be a string"));
      }
    }
    if (body_.contains("NextToken") && !body_["NextToken"].is_string()) {
      return InvalidValue("NextToken must be a string");
    }
    const std::string ns = body_.value("Namespace", std::string(kNamespace));
    const std::string only = body_.value("MetricName", std::string());
    const std::string token = body_.value("NextToken", std::string());
    size_t begin = 0;
    if (!token.empty() && (!absl::SimpleAtoi(token, &begin))) {
      return InvalidValue("NextToken is not one this call returned");
    }
    json metrics = json::array();
    absl::StatusOr<std::vector<VolumeInfo>> volumes = region_.ListVolumes();
    if (!volumes.ok()) return CloudWatchError{500, "InternalServiceError", "cannot list volumes"};
    if (ns != kNamespace) return json{{"Metrics", metrics}};
    for (const VolumeInfo& v : *volumes) {
      if (v.elsewhere || !Owns(account_, v.owner, store_)) continue;
      // BurstBalance only where the volume's limiter has a credit bucket (its type and size).
      absl::StatusOr<std::unique_ptr<Region::VolumePin>> pin = region_.PinVolume(v.id);
      const bool bucket = pin.ok() && (*pin)->volume().limiter().Stats().has_burst_bucket;
      for (const auto& [name, def] : Metrics()) {
        if ((!only.empty() && name != only) || (def.burst_only && !bucket)) continue;
        metrics.push_back({{"Namespace", kNamespace},
                           {"MetricName", name},
                           {"Dimensions", json::array({{{"Name", kDimension}, {"Value", v.id}}})}});
      }
    }
    // Pages of 500, as CloudWatch returns them.
    constexpr size_t kPage = 500;
    json page = json::array();
    for (size_t i = begin; i < metrics.size() && i < begin + kPage; ++i) page.push_back(metrics[i]);
    json out{{"Metrics", page}};
    if (begin + kPage < metrics.size()) out["NextToken"] = absl::StrCat(begin + kPage);
    return out;
  }

  const HttpRequest& request_;
  const Account& account_;
  Store& store_;
  Region& region_;
  json body_;
};

}  // namespace

HttpResponse CloudWatchService::Handle(const HttpRequest& request, const Account& account,
                                       Store& store, Region& region) {
  return CloudWatchCall(request, account, store, region).Run();
}

HttpResponse CloudWatchService::Error(int status, const std::string& code,
                                      const std::string& message) {
  // The SDKs take the code from x-amzn-query-error (CloudWatch's JSON protocol keeps its Query
  // error codes).
  return HttpResponse{
      status,
      {{"Content-Type", "application/x-amz-json-1.0"},
       {"x-amzn-query-error", absl::StrCat(code, status < 500 ? ";Sender" : ";Receiver")}},
      json({{"__type", code}, {"message", message}}).dump()};
}

}  // namespace strata::api
