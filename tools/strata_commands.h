#pragma once
// The strata CLI's subcommands, in two families: those that go through stratad's API
// (strata_api_commands.cc) and those that open the store directory directly, with stratad
// stopped (strata_store_commands.cc). Each family adds its subcommands to the CLI11 app; the
// one the user named sets `run`, which main calls after parsing.

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"

namespace strata::tools {

// What the command line said: the global options and every subcommand's options and words.
// Owned by main; the app's options write into it while parsing.
struct CommandLine {
  // Global (accepted before or after the subcommand).
  std::string data_dir = "./data";
  std::string region;    // Empty: the store's default (or the API's configured one).
  std::string endpoint;  // Empty: http://127.0.0.1:8150.
  std::string output = "json";
  std::string nbd = "127.0.0.1:10809";
  std::string kms_root_key_file;  // Empty: DIR.kms-root-key.

  // Subcommands' options.
  std::string size;
  std::string snapshot;
  std::vector<std::string> tags;  // KEY=VALUE, repeatable.
  std::string offset;
  std::string rate;
  std::string description;
  std::string instance_id;
  std::string device;
  std::string name;
  std::string architecture = "x86_64";
  std::string boot_mode;
  std::string nbd_socket;
  int seconds = 10;

  // Subcommands' positional words.
  std::string volume_id;
  bool force = false;
  bool json = false;  // copy-stats --json
  std::string snapshot_id;
  std::string second_snapshot_id;
  std::string file;
  std::string instance;
  std::string region_name;
  std::string account_name;
  std::string action;
  std::vector<std::string> params;  // Name=Value.
};

// The program to run once parsing is done; returns the exit status.
using Run = std::function<int()>;

// Adds init, env, status, attach, detach, import-image, instances, console, ec2 and copy-stats.
void AddApiCommands(CLI::App& app, CommandLine& cl, Run& run);

// Adds volume, snapshot, region, account, gc and stats.
void AddStoreCommands(CLI::App& app, CommandLine& cl, Run& run);
// `strata volume takeover`: the one volume command that runs through stratad's API (the node
// taking a volume over is running).
void AddVolumeApiCommands(CLI::App& volume, CommandLine& cl, Run& run);

// stats VOL: the volume's CloudWatch figures (GetMetricData through stratad's API), one row
// per second for the last cl.seconds; returns the exit status.
int VolumeStats(const CommandLine& cl);

// Creates account `name` through stratad's API as the admin account (stratad has the store)
// and prints its keys; returns the exit status.
int CreateAccountThroughApi(const CommandLine& cl, const std::string& name);

// Prints "strata: MESSAGE" and returns the exit status for `s`: 2 for bad input, else 1.
int Fail(const absl::Status& s);

}  // namespace strata::tools
