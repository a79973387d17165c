#pragma once
// Command-line parsing shared by strata, stratad and strata-fsck, on CLI11: every program and
// subcommand has --help, and a usage error is one line naming what was wrong, exit status 2.

#include <cstdint>
#include <optional>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"

namespace strata::tools {

// Parses argv with `app`. Returns std::nullopt when the program should go on, else the exit
// status to return at once: 0 after --help (printed to stdout), 2 after a usage error (printed
// to stderr as "PROGRAM: unknown option --x (PROGRAM ... --help lists the options)").
std::optional<int> ParseCommandLine(CLI::App& app, int argc, char** argv);

// Parses a size such as 4096, 64K, 10M, 2G, 1T (powers of 1024). `what` names the option in
// the error ("--size: invalid size \"12Q\"").
absl::StatusOr<uint64_t> ParseSize(const std::string& text, const std::string& what = "");

}  // namespace strata::tools
