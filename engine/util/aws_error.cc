#include "strata/aws_error.h"

#include "absl/strings/cord.h"

namespace strata {
namespace {
constexpr char kCodePayload[] = "strata.aws/error-code";
}  // namespace

std::string AwsErrorCode(const absl::Status& status) {
  absl::optional<absl::Cord> code = status.GetPayload(kCodePayload);
  return code.has_value() ? std::string(*code) : "";
}

absl::Status WithAwsErrorCode(absl::Status status, const std::string& code) {
  status.SetPayload(kCodePayload, absl::Cord(code));
  return status;
}

absl::Status AwsError(absl::StatusCode code, const std::string& aws_code,
                      const std::string& message) {
  return WithAwsErrorCode(absl::Status(code, message), aws_code);
}

}  // namespace strata
