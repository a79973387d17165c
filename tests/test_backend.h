#pragma once
// The backend the engine's suites run on. CTest runs each engine suite twice (tests/
// CMakeLists.txt): on the local backend, and on the RADOS backend with STRATA_TEST_CEPH_CONF
// naming the ceph.conf of the cluster that scripts/ceph_cluster.sh started for the run. Every
// test directory gets a RADOS namespace of its own, so tests never see each other's objects.

#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>

#include "absl/strings/str_cat.h"
#include "rados/cluster.h"
#include "strata/fsck.h"
#include "strata/store.h"

namespace strata::testing {

// The RADOS backend for the store in `dir`, or nullopt on the local backend. Garbage
// collection has no grace period here (tests collect right after they drop references).
inline std::optional<CephBackendOptions> TestCeph(const std::string& dir) {
  const char* conf = std::getenv("STRATA_TEST_CEPH_CONF");
  if (conf == nullptr || *conf == '\0') return std::nullopt;
  static const uint64_t salt = std::random_device{}() * 0x9E3779B97F4A7C15ull;
  CephBackendOptions ceph;
  ceph.conf_file = conf;
  ceph.pool = "strata";
  ceph.data_pool = "strata-data";
  ceph.name_space = absl::StrCat("test-", std::hash<std::string>{}(dir) ^ salt);
  ceph.timeout_seconds = 30;
  ceph.gc_grace_seconds = 0;
  return ceph;
}

inline bool OnRados() { return TestCeph("").has_value(); }

// StoreOptions for a store in `dir` on the suite's backend.
inline StoreOptions TestStoreOptions(const std::string& dir) {
  StoreOptions options;
  options.ceph = TestCeph(dir);
  if (options.ceph.has_value()) {
    // The archive tier in the cluster's radosgw (scripts/ceph_cluster.sh with CEPH_WITH_RGW=1
    // writes its endpoint and keys beside ceph.conf), each store under a prefix of its own.
    const std::string conf = options.ceph->conf_file;
    std::ifstream env(conf.substr(0, conf.rfind('/')) + "/env.sh");
    std::map<std::string, std::string> vars;
    for (std::string line; std::getline(env, line);) {
      const size_t eq = line.find('=');
      if (line.rfind("export ", 0) == 0 && eq != std::string::npos) {
        vars[line.substr(7, eq - 7)] = line.substr(eq + 1);
      }
    }
    if (vars.contains("STRATA_ARCHIVE_S3")) {
      options.archive.s3_endpoint = vars["STRATA_ARCHIVE_S3"];
      options.archive.s3_bucket = "strata-test-archive";
      options.archive.s3_access_key_id = vars["STRATA_ARCHIVE_ACCESS_KEY_ID"];
      options.archive.s3_secret_access_key = vars["STRATA_ARCHIVE_SECRET_ACCESS_KEY"];
      options.archive.s3_prefix = options.ceph->name_space + "/";
    }
  }
  return options;
}

// strata-fsck's check of the store in `dir`, on the suite's backend.
inline absl::StatusOr<FsckReport> CheckTestStore(const std::string& dir) {
  return CheckStore(dir, nullptr, TestCeph(dir));
}

// One connection per test process, for suites that open catalogs and chunk stores directly.
inline std::shared_ptr<rados::Cluster> TestCluster() {
  static std::shared_ptr<rados::Cluster> cluster = [] {
    std::optional<CephBackendOptions> ceph = TestCeph("");
    if (!ceph.has_value()) return std::shared_ptr<rados::Cluster>();
    absl::StatusOr<std::shared_ptr<rados::Cluster>> connected = rados::Cluster::Connect(*ceph);
    if (!connected.ok()) {
      std::fprintf(stderr, "cannot reach the test cluster: %s\n",
                   connected.status().ToString().c_str());
      std::abort();
    }
    return *connected;
  }();
  return cluster;
}

}  // namespace strata::testing
