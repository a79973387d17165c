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
  // A store on RADOS: DIR/backend names its pools and namespace; these reach the cluster.
  strata::CephBackendOptions ceph;
  ceph.client_id.clear();  // Default: the one DIR/backend records.
  app.add_option("--ceph-conf", ceph.conf_file,
                 "RADOS stores: the cluster's ceph.conf (default: the store's, else $CEPH_CONF)")
      ->option_text("FILE");
  app.add_option("--ceph-id", ceph.client_id,
                 "RADOS stores: the cephx user, without client. (default: the store's)")
      ->option_text("NAME");
  app.add_option("--gc-grace", ceph.gc_grace_seconds,
                 "RADOS stores: unindexed chunk objects older than this are reported as leaks")
      ->capture_default_str()
      ->option_text("SECONDS");
  if (std::optional<int> rc = strata::tools::ParseCommandLine(app, argc, argv); rc.has_value()) {
    return *rc;
  }
  auto report = strata::CheckStore(dir, nullptr, ceph);
  if (!report.ok()) {
    std::fprintf(stderr, "strata-fsck: %s\n", std::string(report.status().message()).c_str());
    return 2;
  }
  for (const std::string& finding : report->findings) std::printf("FINDING: %s\n", finding.c_str());
  std::printf(
      "checked %llu regions, %llu volumes, %llu snapshots, %llu manifest entries, %llu chunks; "
      "%llu reclaimable, %llu stored but not yet indexed; %zu findings\n",
      (unsigned long long)report->regions_checked, (unsigned long long)report->volumes_checked,
      (unsigned long long)report->snapshots_checked,
      (unsigned long long)report->manifest_entries_checked,
      (unsigned long long)report->chunks_checked, (unsigned long long)report->reclaimable_chunks,
      (unsigned long long)report->unindexed_chunks, report->findings.size());
  return report->findings.empty() ? 0 : 1;
}
