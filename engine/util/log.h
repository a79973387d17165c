#pragma once
// A minimal leveled logger writing to stderr. Logs name volumes, snapshots and chunks by id,
// never by contents or key bytes.

#include <string_view>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace strata::util {

enum class LogLevel { kDebug, kInfo, kWarning, kError };

// Sets the lowest level that is printed. Default: kInfo (kWarning when STRATA_QUIET is set).
void SetLogLevel(LogLevel level);
// Writes one line "LEVEL message" to stderr. Thread-safe.
void Log(LogLevel level, absl::string_view message);

}  // namespace strata::util

#define STRATA_LOG(level, ...) \
  ::strata::util::Log(::strata::util::LogLevel::level, ::absl::StrCat(__VA_ARGS__))
