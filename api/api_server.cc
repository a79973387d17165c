#include "api_server.h"

#include <ctime>
#include <variant>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "cloudwatch_service.h"
#include "kms_service.h"
#include "rbin_service.h"
#include "sigv4.h"

namespace strata::api {

ApiServer::ApiServer(Store& store, HttpServerOptions options, Ec2Options ec2_options,
                     size_t replay_cache_entries)
    : store_(store),
      ec2_(store, std::move(ec2_options)),
      ebs_(store),
      replay_guard_(replay_cache_entries > 0
                        ? std::make_unique<ReplayGuard>(replay_cache_entries, kMaxClockSkewSeconds)
                        : nullptr),
      http_(std::move(options), [this](const HttpRequest& r) { return Handle(r); }) {}

HttpResponse ApiServer::Handle(const HttpRequest& request) {
  auto lookup = [this](const std::string& access_key) -> absl::StatusOr<std::string> {
    absl::StatusOr<Account> account = store_.FindAccessKey(access_key);
    if (!account.ok()) return account.status();
    return account->secret_access_key;
  };
  // Errors take the format of the service named in the credential scope (EC2 XML by default).
  absl::StatusOr<SigV4Authorization> scope = ParseAuthorization(request.Header("authorization"));
  const bool rest_json = scope.ok() && scope->service == "ebs";
  const bool kms_json = scope.ok() && scope->service == "kms";
  const bool cloudwatch = scope.ok() && scope->service == "monitoring";
  const bool rbin = scope.ok() && scope->service == "rbin";
  auto error = [&](int status, const std::string& ec2_code, const std::string& json_type,
                   const std::string& message) {
    if (kms_json) return KmsService::Error(status, json_type, message);
    if (cloudwatch) return CloudWatchService::Error(status, ec2_code, message);
    if (rbin) return RbinService::Error(status, json_type, message);
    return rest_json ? EbsService::Error(status, json_type, message)
                     : Ec2Service::Error(status, ec2_code, message);
  };
  const int64_t now = ::time(nullptr);
  std::variant<SigV4Authorization, AuthFailure> verified = Verify(request, lookup, now);
  if (replay_guard_ != nullptr) {
    if (const auto* auth = std::get_if<SigV4Authorization>(&verified)) {
      // The SDKs do not sign a nonce: the same call made twice within one second is signed the
      // same. Their invocation id (new per call) and attempt (new per retry) tell those apart;
      // a captured request sent again unchanged is refused.
      const std::string identity = absl::StrCat(absl::AsciiStrToLower(auth->signature), " ",
                                                request.Header("amz-sdk-invocation-id"), " ",
                                                request.Header("amz-sdk-request"));
      switch (replay_guard_->Admit(identity, auth->signed_at, now)) {
        case ReplayGuard::Verdict::kFresh:
          break;
        case ReplayGuard::Verdict::kReplayed:
          verified = AuthFailure{"AuthFailure",
                                 "this signed request was received before (a replay): sign each "
                                 "request anew"};
          break;
        case ReplayGuard::Verdict::kTooOld:
          verified = AuthFailure{"AuthFailure",
                                 "the request is older than the server can check for replays "
                                 "under its current load: sign it again with the current time"};
          break;
      }
    }
  }
  if (const AuthFailure* failure = std::get_if<AuthFailure>(&verified)) {
    const std::string json_type = failure->code == "AuthFailure" ? "AccessDeniedException"
                                  : failure->code == "InvalidClientTokenId"
                                      ? "UnrecognizedClientException"
                                      : "InvalidSignatureException";
    return error(failure->code == "AuthFailure" ? 401 : 403, failure->code, json_type,
                 failure->message);
  }
  const SigV4Authorization& auth = std::get<SigV4Authorization>(verified);
  absl::StatusOr<Account> account = store_.FindAccessKey(auth.access_key_id);
  if (!account.ok())
    return error(403, "InvalidClientTokenId", "UnrecognizedClientException", "unknown access key");
  absl::StatusOr<Region*> region = store_.GetRegion(auth.region);
  if (!region.ok()) {
    std::string known;
    for (const std::string& name : store_.ListRegions())
      absl::StrAppend(&known, known.empty() ? "" : ", ", name);
    return error(400, "InvalidRegion", "ValidationException",
                 absl::StrCat("region \"", auth.region, "\" is not served here; regions: ", known));
  }
  if (auth.service == "ec2") return ec2_.Handle(request, *account, **region);
  if (auth.service == "ebs") return ebs_.Handle(request, *account, **region);
  if (auth.service == "kms") return KmsService().Handle(request, *account, **region);
  if (auth.service == "rbin") return RbinService().Handle(request, *account, **region);
  if (auth.service == "monitoring") {
    return CloudWatchService().Handle(request, *account, store_, **region);
  }
  return Ec2Service::Error(
      400, "UnknownService",
      absl::StrCat("service \"", auth.service, "\" is not served by Strata yet"));
}

}  // namespace strata::api
