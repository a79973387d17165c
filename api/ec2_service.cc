#include "ec2_service.h"

#include <variant>

#include "absl/strings/str_cat.h"
#include "ec2_common.h"

namespace strata::api {

HttpResponse Ec2Service::Error(int status, const std::string& code, const std::string& message) {
  XmlWriter x;
  x.Open("Response");
  x.Open("Errors");
  x.Open("Error");
  x.Text("Code", code);
  x.Text("Message", message);
  x.Close();
  x.Close();
  x.Text("RequestID", RequestId());
  return HttpResponse{status, {{"Content-Type", "text/xml;charset=UTF-8"}}, x.Finish()};
}

Result Ec2Service::Run(const HttpRequest& request, const Account& account, Region& region,
                       const QueryParams& p, const std::string& action) {
  if (p.GetOr("DryRun", "false") == "true") {
    return Ec2Error{412, "DryRunOperation",
                    "Request would have succeeded, but DryRun flag is set."};
  }
  XmlWriter x;
  x.Open(absl::StrCat(action, "Response"));
  x.Attribute("xmlns", kXmlns);
  x.Text("requestId", RequestId());
  const std::string host = request.Header("host");
  const Ec2CallContext c{store_,   region,       account, p, volume_tokens_,
                         options_, store_tasks_, host,    x};
  for (auto* run : {RunVolumeCall, RunSnapshotCall, RunAccountCall, RunImageFamilyCall,
                    RunImageSettingsCall, RunImageTaskCall, RunInstanceCall, RunProtectionCall}) {
    if (std::optional<Result> done = run(c, action); done.has_value()) return *std::move(done);
  }
  return Ec2Error{
      400, "InvalidAction",
      absl::StrCat("the action \"", action, "\" is not supported by Strata (see docs/api.md)")};
}

HttpResponse Ec2Service::Handle(const HttpRequest& request, const Account& account,
                                Region& region) {
  absl::StatusOr<QueryParams> params =
      QueryParams::Parse(request.method == "POST" ? absl::string_view(request.body)
                                                  : absl::string_view(request.query));
  if (!params.ok())
    return Error(400, "InvalidParameterValue", std::string(params.status().message()));
  const std::string action = params->GetOr("Action", "");
  if (action.empty()) return Error(400, "MissingAction", "the request has no Action parameter");
  Result result = Run(request, account, region, *params, action);
  if (const Ec2Error* e = std::get_if<Ec2Error>(&result))
    return Error(e->status, e->code, e->message);
  return HttpResponse{
      200, {{"Content-Type", "text/xml;charset=UTF-8"}}, std::get<std::string>(std::move(result))};
}

}  // namespace strata::api
