#include "util/log.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <ctime>

#include "absl/strings/string_view.h"

namespace strata::util {
namespace {

std::atomic<LogLevel>& Threshold() {
  static std::atomic<LogLevel> level{std::getenv("STRATA_QUIET") ? LogLevel::kWarning
                                                                 : LogLevel::kInfo};
  return level;
}

const char* Name(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "D";
    case LogLevel::kInfo:
      return "I";
    case LogLevel::kWarning:
      return "W";
    case LogLevel::kError:
      return "E";
  }
  return "?";
}

}  // namespace

void SetLogLevel(LogLevel level) { Threshold().store(level); }

void Log(LogLevel level, absl::string_view message) {
  if (level < Threshold().load()) return;
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  tm utc{};
  gmtime_r(&ts.tv_sec, &utc);
  char stamp[32];
  strftime(stamp, sizeof(stamp), "%H:%M:%S", &utc);
  // One fprintf call per line keeps lines from interleaving across threads.
  std::fprintf(stderr, "%s %s.%03ld %.*s\n", Name(level), stamp, ts.tv_nsec / 1000000,
               static_cast<int>(message.size()), message.data());
}

}  // namespace strata::util
