// strata-fsck: checks a store offline and prints every inconsistency. Exit 0: sound;
// 1: findings; 2: the check itself could not run.

#include <cstdio>

#include "command_line.h"
#include "strata/fsck.h"

int main(int argc, char** argv) {
  std::string dir = "./data";
  CLI::App app(
      "strata-fsck: checks every reference, refcount and checksum of a store (stratad must be "
      "stopped). Exit 0: sound; 1: findings; 2: the check could not run.",
      "strata-fsck");
  app.add_option("--data-dir", dir, "the store directory (default ./data)")->option_text("DIR");
  if (std::optional<int> rc = strata::tools::ParseCommandLine(app, argc, argv); rc.has_value()) {
    return *rc;
  }
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
