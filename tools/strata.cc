// strata: the command-line client. Some subcommands go through stratad's API
// (strata_api_commands.cc); the others open a store directory directly, with stratad stopped
// (strata_store_commands.cc). Every subcommand has --help.

#include "command_line.h"
#include "strata_commands.h"

namespace {

constexpr char kFooter[] = R"(
Through stratad's API (stratad running; signed with DIR/credentials or AWS_* variables):
  init, env, status, attach, detach, import-image, instances, console, ec2, copy-stats,
  volume takeover. API errors exit 254 with the AWS error code on stderr.
On the store directly (stratad stopped): volume, snapshot, region, account, gc, stats.
Sizes take K, M, G, T suffixes (powers of 1024). Bad input exits 2 and changes nothing.
`strata COMMAND --help` describes each command.)";

}  // namespace

int main(int argc, char** argv) {
  strata::tools::CommandLine cl;
  CLI::App app("strata: volumes, snapshots, images and instances of a Strata store", "strata");
  app.require_subcommand(1);
  app.fallthrough();  // Global options may follow the subcommand too.
  app.add_option("--data-dir", cl.data_dir, "the store directory (default ./data)")
      ->option_text("DIR");
  app.add_option("--region", cl.region, "the region (default: the store's first)")
      ->option_text("NAME");
  app.add_option("--endpoint", cl.endpoint, "stratad's API (default http://127.0.0.1:8150)")
      ->option_text("URL");
  app.add_option("--output", cl.output, "how API commands print: json, text or table")
      ->check(CLI::IsMember({"json", "text", "table"}))
      ->capture_default_str();
  app.add_option("--nbd", cl.nbd,
                 "stratad's NBD address, for printed lines (default "
                 "127.0.0.1:10809)")
      ->option_text("HOST:PORT");
  app.add_option("--kms-root-key-file", cl.kms_root_key_file,
                 "the KMS root key (default DIR.kms-root-key)")
      ->option_text("FILE");

  strata::tools::Run run;
  strata::tools::AddApiCommands(app, cl, run);
  strata::tools::AddStoreCommands(app, cl, run);
  app.footer(kFooter);  // After the subcommands, which would inherit it.
  if (std::optional<int> rc = strata::tools::ParseCommandLine(app, argc, argv); rc.has_value()) {
    return *rc;
  }
  return run();
}
