#include "strata/psk_file.h"

#include <algorithm>
#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace strata {

absl::StatusOr<std::map<std::string, std::string>> LoadPskFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("cannot read PSK file ", path));
  std::map<std::string, std::string> out;
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    absl::string_view text = absl::StripAsciiWhitespace(line);
    if (text.empty() || text[0] == '#') continue;
    const size_t colon = text.rfind(':');
    const absl::string_view hex =
        colon == absl::string_view::npos ? absl::string_view() : text.substr(colon + 1);
    const bool is_hex = hex.size() % 2 == 0 && std::all_of(hex.begin(), hex.end(), [](char c) {
                          return absl::ascii_isxdigit(static_cast<unsigned char>(c));
                        });
    std::string key = is_hex ? absl::HexStringToBytes(hex) : std::string();
    if (colon == absl::string_view::npos || colon == 0 || !is_hex || key.size() < 16 ||
        key.size() > 64) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":", number, ": expected IDENTITY:HEXKEY with a 16 to 64 byte key"));
    }
    out[std::string(text.substr(0, colon))] = std::move(key);
  }
  if (out.empty()) return absl::InvalidArgumentError(absl::StrCat("PSK file ", path, " is empty"));
  return out;
}

}  // namespace strata
