#pragma once
// A small command-line parser shared by the tools: positional words and --name=value or
// --name value options, each validated before anything is done.

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace strata::tools {

class Args {
 public:
  // Parses argv[first..]. Options not in `known` (names without "--") are an error; names in
  // `switches` take no value.
  static absl::StatusOr<Args> Parse(int argc, char** argv, int first,
                                    const std::set<std::string>& known,
                                    const std::set<std::string>& switches = {});

  const std::vector<std::string>& positional() const { return positional_; }
  bool Has(const std::string& name) const { return options_.contains(name); }
  // The last value of an option given more than once.
  std::string Get(const std::string& name, const std::string& fallback = "") const;
  // Every value of an option, in order (`--region a --region b`).
  std::vector<std::string> GetAll(const std::string& name) const;
  // Parses a size such as 4096, 64K, 10M, 2G, 1T (powers of 1024).
  absl::StatusOr<uint64_t> GetSize(const std::string& name, uint64_t fallback) const;
  absl::StatusOr<uint64_t> GetUint(const std::string& name, uint64_t fallback) const;

 private:
  std::vector<std::string> positional_;
  std::map<std::string, std::string> options_;
  std::map<std::string, std::vector<std::string>> repeated_;
};

absl::StatusOr<uint64_t> ParseSize(const std::string& text);

}  // namespace strata::tools
