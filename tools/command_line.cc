#include "command_line.h"

#include <cctype>
#include <cstdio>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace strata::tools {
namespace {

// The deepest subcommand the parse reached: its --help is the one to point at.
const CLI::App* DeepestSubcommand(const CLI::App* app) {
  for (const CLI::App* sub : app->get_subcommands()) return DeepestSubcommand(sub);
  return app;
}

std::string CommandPath(const CLI::App* app) {
  std::string path = app->get_name();
  for (const CLI::App* p = app->get_parent(); p != nullptr; p = p->get_parent()) {
    path = absl::StrCat(p->get_name(), " ", path);
  }
  return path;
}

// One line that names the word the parser could not place, else CLI11's own reason.
std::string UsageError(const CLI::App& app, const CLI::Error& e) {
  const std::vector<std::string> extras = app.remaining(true);
  for (const std::string& word : extras) {
    if (word.size() > 1 && word.front() == '-') return absl::StrCat("unknown option ", word);
  }
  if (!extras.empty()) {
    return DeepestSubcommand(&app)->get_subcommands({}).empty()
               ? absl::StrCat("unexpected argument \"", extras.front(), "\"")
               : absl::StrCat("unknown command \"", extras.front(), "\"");
  }
  const CLI::App* deepest = DeepestSubcommand(&app);
  const std::vector<const CLI::App*> commands = deepest->get_subcommands({});
  if (deepest->get_subcommands().empty() && !commands.empty()) {
    std::string names;
    for (const CLI::App* c : commands)
      absl::StrAppend(&names, names.empty() ? "" : ", ", c->get_name());
    return absl::StrCat(CommandPath(deepest), " needs a command: ", names);
  }
  return e.what();
}

}  // namespace

std::optional<int> ParseCommandLine(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help: usage on stdout.
    const std::string where = CommandPath(DeepestSubcommand(&app));
    std::fprintf(stderr, "%s: %s (%s --help lists the options)\n", app.get_name().c_str(),
                 UsageError(app, e).c_str(), where.c_str());
    return 2;
  }
  return std::nullopt;
}

absl::StatusOr<uint64_t> ParseSize(const std::string& text, const std::string& what) {
  const std::string prefix = what.empty() ? "" : absl::StrCat(what, ": ");
  if (text.empty()) return absl::InvalidArgumentError(absl::StrCat(prefix, "empty size"));
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
    return absl::InvalidArgumentError(absl::StrCat(prefix, "invalid size \"", text, "\""));
  }
  return value * multiplier;
}

}  // namespace strata::tools
