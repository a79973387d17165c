#pragma once
// The AWS error code an engine Status may carry beside its canonical code, so that front ends
// report what AWS would ("InvalidSnapshot.InUse", "KMSInvalidStateException", ...).

#include <string>

#include "absl/status/status.h"

namespace strata {

// The AWS error code `status` carries, or "" when none.
std::string AwsErrorCode(const absl::Status& status);
// `status` with `code` attached as its AWS error code.
absl::Status WithAwsErrorCode(absl::Status status, const std::string& code);
// A status of canonical `code` and `message` carrying the AWS error code `aws_code`.
absl::Status AwsError(absl::StatusCode code, const std::string& aws_code,
                      const std::string& message);

}  // namespace strata
