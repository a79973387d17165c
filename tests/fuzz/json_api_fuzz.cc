// Fuzz target for the JSON front ends over a real store: KMS (TrentService) and CloudWatch
// (GraniteServiceVersion20100801) requests whose bodies are anything at all. Every answer must
// be a well-formed AWS reply: 200 with a JSON object, or 4xx with a JSON "__type" (as
// ValidationException / SerializationException / the operation's own codes), never a crash or
// an exception (a wrongly typed field once threw out of the JSON library and ended stratad).
// Built with clang -fsanitize=fuzzer it is a libFuzzer target; otherwise fuzz_driver.cc runs it
// on seeded random mutations of the seeds below (as a ctest, and under ASan+UBSan in CI).
// The first byte picks the operation; the rest is the body.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "cloudwatch_service.h"
#include "fuzz_scratch.h"
#include "kms_service.h"
#include "nlohmann/json.hpp"
#include "strata/secret.h"
#include "strata/store.h"

namespace {

using namespace strata;

const std::vector<std::string>& Operations() {
  static const std::vector<std::string> ops = {
      "TrentService.CreateKey",
      "TrentService.DescribeKey",
      "TrentService.ListKeys",
      "TrentService.EnableKeyRotation",
      "TrentService.ScheduleKeyDeletion",
      "TrentService.CreateAlias",
      "TrentService.ListAliases",
      "TrentService.PutKeyPolicy",
      "TrentService.CreateGrant",
      "TrentService.ListGrants",
      "TrentService.Encrypt",
      "TrentService.Decrypt",
      "TrentService.ReEncrypt",
      "TrentService.GenerateDataKey",
      "TrentService.RetireGrant",
      "TrentService.NoSuchOperation",
      "GraniteServiceVersion20100801.GetMetricData",
      "GraniteServiceVersion20100801.GetMetricStatistics",
      "GraniteServiceVersion20100801.ListMetrics",
      "GraniteServiceVersion20100801.PutMetricData",
  };
  return ops;
}

// Never destroyed (libFuzzer exits from anywhere); its directory goes at exit.
struct Fixture {
  Fixture() {
    dir = FuzzScratchDir("strata-jfuzz");
    StoreOptions options;
    options.background_work = false;
    options.kms_root_key = RandomSecret(32);
    store = std::move(*Store::Open(dir, options));
    account = *store->CreateAccount("fuzz");
    region = store->DefaultRegion();
    volume_id = region->CreateVolume({.size_bytes = 1 << 20, .owner = account.id})->id;
  }
  std::string dir;
  std::unique_ptr<Store> store;
  Account account;
  Region* region = nullptr;
  std::string volume_id;
};

Fixture& TheFixture() {
  static Fixture* fixture = new Fixture();
  return *fixture;
}

}  // namespace

std::vector<std::string> FuzzSeeds() {
  auto op = [](int i, const std::string& body) {
    return std::string(1, static_cast<char>(i)) + body;
  };
  return {
      op(0,
         R"({"Description": "k", "KeyUsage": "ENCRYPT_DECRYPT", "Tags": [{"TagKey": "a", "TagValue": "b"}]})"),
      op(1, R"({"KeyId": "alias/aws/ebs"})"),
      op(2, R"({"Limit": 10, "Marker": "x"})"),
      op(4, R"({"KeyId": "1234abcd-12ab-34cd-56ef-1234567890ab", "PendingWindowInDays": 7})"),
      op(5, R"({"AliasName": "alias/x", "TargetKeyId": "alias/aws/ebs"})"),
      op(7,
         R"({"KeyId": "alias/aws/ebs", "PolicyName": "default", "Policy": "{\"Statement\": []}"})"),
      op(8,
         R"({"KeyId": "alias/aws/ebs", "GranteePrincipal": "111111111111", "Operations": ["Decrypt"]})"),
      op(10,
         R"({"KeyId": "alias/aws/ebs", "Plaintext": "aGVsbG8=", "EncryptionContext": {"a": "b"}})"),
      op(11, R"({"CiphertextBlob": "AAAA", "EncryptionContext": {"a": "b"}})"),
      op(13, R"({"KeyId": "alias/aws/ebs", "NumberOfBytes": 32, "KeySpec": "AES_256"})"),
      op(16,
         R"({"MetricDataQueries": [{"Id": "a", "MetricStat": {"Metric": {"Namespace": "AWS/EBS", "MetricName": "VolumeReadOps", "Dimensions": [{"Name": "VolumeId", "Value": "vol-1"}]}, "Period": 60, "Stat": "Sum"}}], "StartTime": 1700000000, "EndTime": 1700000600})"),
      op(17,
         R"({"Namespace": "AWS/EBS", "MetricName": "VolumeWriteOps", "Dimensions": [{"Name": "VolumeId", "Value": "vol-1"}], "StartTime": "2026-01-01T00:00:00Z", "EndTime": "2026-01-01T01:00:00Z", "Period": 60, "Statistics": ["Sum", "Average"]})"),
      op(18, R"({"Namespace": "AWS/EBS", "MetricName": "BurstBalance", "NextToken": "1"})"),
      op(3, "[1, 2, 3]"),
      op(12, R"({"CiphertextBlob": 5, "DestinationKeyId": ["x"]})"),
  };
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  Fixture& f = TheFixture();
  const std::vector<std::string>& ops = Operations();
  const std::string& target = ops[data[0] % ops.size()];
  api::HttpRequest request;
  request.method = "POST";
  request.path = "/";
  request.body.assign(reinterpret_cast<const char*>(data) + 1, size - 1);
  // Volume ids in the seeds name a real volume now and then.
  if (data[0] & 0x80) {
    const size_t at = request.body.find("vol-1");
    if (at != std::string::npos) request.body.replace(at, 5, f.volume_id);
  }
  const bool kms = target.rfind("TrentService.", 0) == 0;
  request.headers = {
      {"x-amz-target", target},
      {"content-type", kms ? "application/x-amz-json-1.1" : "application/x-amz-json-1.0"}};
  const api::HttpResponse response =
      kms ? api::KmsService().Handle(request, f.account, *f.region)
          : api::CloudWatchService().Handle(request, f.account, *f.store, *f.region);
  const nlohmann::json body = nlohmann::json::parse(response.body, nullptr, false);
  if (body.is_discarded() || !body.is_object()) std::abort();  // Not a JSON object: no reply.
  if (response.status == 200) return 0;
  if (response.status < 400 || response.status >= 500 || !body.contains("__type")) std::abort();
  return 0;
}
