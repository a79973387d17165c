#pragma once
// A fuzz target's store directory: made once under the temp directory and removed when the
// process exits (libFuzzer exits from anywhere, so the fixtures that use it are never
// destroyed), so runs leave nothing behind.

#include <stdlib.h>

#include <cstdlib>
#include <filesystem>
#include <string>

inline std::string FuzzScratchDir(const char* prefix) {
  std::string tmpl = (std::filesystem::temp_directory_path() / prefix).string() + "-XXXXXX";
  static std::string dir = [&] {
    if (::mkdtemp(tmpl.data()) == nullptr) std::abort();
    return tmpl;
  }();
  std::atexit([] {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  });
  return dir;
}
