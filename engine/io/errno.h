#pragma once
#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace strata::io {

// Converts a positive errno from a syscall (or -res of an io_uring completion) into a Status whose
// message names `context` (an operation and a path). EIO is kDataLoss and ENOSPC/EDQUOT are
// kResourceExhausted, so the front ends can map them back exactly.
absl::Status ErrnoToStatus(int error_number, absl::string_view context);

}  // namespace strata::io
