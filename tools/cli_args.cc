#include "cli_args.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace strata::tools {

absl::StatusOr<Args> Args::Parse(int argc, char** argv, int first,
                                 const std::set<std::string>& known,
                                 const std::set<std::string>& switches) {
  Args args;
  for (int i = first; i < argc; ++i) {
    std::string word = argv[i];
    if (!word.starts_with("--")) {
      args.positional_.push_back(word);
      continue;
    }
    std::string name = word.substr(2);
    std::optional<std::string> value;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    if (!known.contains(name) && !switches.contains(name)) {
      return absl::InvalidArgumentError(absl::StrCat("unknown option --", name));
    }
    if (switches.contains(name)) {
      if (value.has_value())
        return absl::InvalidArgumentError(absl::StrCat("--", name, " takes no value"));
      args.options_[name] = "true";
      continue;
    }
    if (!value.has_value()) {
      if (i + 1 >= argc)
        return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
      value = argv[++i];
    }
    args.options_[name] = *value;
    args.repeated_[name].push_back(*value);
  }
  return args;
}

std::vector<std::string> Args::GetAll(const std::string& name) const {
  auto it = repeated_.find(name);
  return it == repeated_.end() ? std::vector<std::string>{} : it->second;
}

std::string Args::Get(const std::string& name, const std::string& fallback) const {
  auto it = options_.find(name);
  return it == options_.end() ? fallback : it->second;
}

absl::StatusOr<uint64_t> ParseSize(const std::string& text) {
  if (text.empty()) return absl::InvalidArgumentError("empty size");
  uint64_t multiplier = 1;
  std::string digits = text;
  const char suffix = static_cast<char>(std::toupper(static_cast<unsigned char>(text.back())));
  const std::string units = "KMGTP";
  if (size_t pos = units.find(suffix); pos != std::string::npos) {
    multiplier = uint64_t{1} << (10 * (pos + 1));
    digits.pop_back();
  }
  uint64_t value = 0;
  if (!absl::SimpleAtoi(digits, &value) || (value != 0 && multiplier > UINT64_MAX / value)) {
    return absl::InvalidArgumentError(absl::StrCat("invalid size \"", text, "\""));
  }
  return value * multiplier;
}

absl::StatusOr<uint64_t> Args::GetSize(const std::string& name, uint64_t fallback) const {
  if (!Has(name)) return fallback;
  absl::StatusOr<uint64_t> v = ParseSize(Get(name));
  if (!v.ok())
    return absl::InvalidArgumentError(absl::StrCat("--", name, ": ", v.status().message()));
  return v;
}

absl::StatusOr<uint64_t> Args::GetUint(const std::string& name, uint64_t fallback) const {
  if (!Has(name)) return fallback;
  uint64_t v = 0;
  if (!absl::SimpleAtoi(Get(name), &v)) {
    return absl::InvalidArgumentError(absl::StrCat("--", name, ": not a number: ", Get(name)));
  }
  return v;
}

}  // namespace strata::tools
