// strata-fsck: checks a store offline and prints every inconsistency. Exit 0: sound;
// 1: findings; 2: the check itself could not run.

#include <cstdio>

#include "cli_args.h"
#include "strata/fsck.h"

int main(int argc, char** argv) {
  auto args = strata::tools::Args::Parse(argc, argv, 1, {"data-dir"}, {"help"});
  if (!args.ok() || args->Has("help") || !args->positional().empty()) {
    if (!args.ok())
      std::fprintf(stderr, "strata-fsck: %s\n", std::string(args.status().message()).c_str());
    std::fputs("usage: strata-fsck [--data-dir DIR]   (default ./data; stratad must be stopped)\n",
               args.ok() && args->Has("help") ? stdout : stderr);
    return args.ok() && args->Has("help") ? 0 : 2;
  }
  const std::string dir = args->Get("data-dir", "./data");
  auto report = strata::CheckStore(dir);
  if (!report.ok()) {
    std::fprintf(stderr, "strata-fsck: %s\n", std::string(report.status().message()).c_str());
    return 2;
  }
  for (const std::string& finding : report->findings) std::printf("FINDING: %s\n", finding.c_str());
  std::printf(
      "checked %llu regions, %llu volumes, %llu snapshots, %llu manifest entries, %llu chunks; "
      "%llu reclaimable; %zu findings\n",
      (unsigned long long)report->regions_checked, (unsigned long long)report->volumes_checked,
      (unsigned long long)report->snapshots_checked,
      (unsigned long long)report->manifest_entries_checked,
      (unsigned long long)report->chunks_checked, (unsigned long long)report->reclaimable_chunks,
      report->findings.size());
  return report->findings.empty() ? 0 : 1;
}
