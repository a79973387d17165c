// stratad: the Strata daemon. Opens the store, serves the AWS-compatible API and NBD, and keeps
// running until SIGTERM or SIGINT, then stops cleanly (connections close, pending snapshots
// complete, volumes flush).

#include <sys/prctl.h>
#include <sys/stat.h>

#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "admin.h"
#include "api_server.h"
#include "command_line.h"
#include "nbd_server.h"
#include "qemu_hypervisor.h"
#include "strata/export.h"
#include "strata/store.h"
#include "strata/transfer.h"
#include "transfer_listener.h"
#include "util/log.h"

namespace {

// What the command line says; defaults as documented in each option's help.
struct Flags {
  std::string data_dir = "./data";
  std::string api_listen = "127.0.0.1:8150";
  size_t api_replay_cache = strata::api::ApiServer::kDefaultReplayCacheEntries;
  std::string nbd_listen;  // Empty: 127.0.0.1:10809,unix:DIR/nbd.sock.
  std::string tls = "on";
  std::string nbd_auth = "account";
  std::string tls_psk_file;
  std::string tls_x509_dir;
  std::string kms_root_key_file;  // Empty: DIR.kms-root-key.
  std::string vm = "auto";
  std::string vm_accel;    // Empty: STRATA_VM_ACCEL, else auto.
  std::string bucket_dir;  // Empty: DIR/buckets.
  std::vector<std::string> regions;
  std::vector<std::string> peer_regions;
  std::string transfer_listen = "off";
  std::string transfer_psk_file;
  std::vector<std::string> links;
  std::string chunk_size;  // Empty: the default.
  bool compression = false;
  std::string qos = "on";
  std::string volume_heads = "rados";
  uint32_t volume_lease_seconds = 30;
  uint64_t seconds_per_day = 86400;
  std::string archive_dir;  // Empty: each region's directory.
  std::string archive_s3;   // Empty: a directory. Else ENDPOINT/BUCKET.
  std::string archive_s3_region = "default";
  double archive_seconds = 2;
  std::string archive_rate = "1G";
  double nbd_handshake_seconds = 30;
  int64_t nbd_poll_us = 50;
  double modifying_seconds = 2;
  std::string optimize_rate = "1G";
  std::string backend;  // Empty: the store's own (DIR/backend), local for a new store.
  strata::CephBackendOptions ceph;
};

void AddFlags(CLI::App& app, Flags& f) {
  app.add_option("--data-dir", f.data_dir, "store directory, created if missing (default ./data)")
      ->option_text("DIR");
  app.add_option("--api-listen", f.api_listen,
                 "control-plane API address; 'off' disables (default 127.0.0.1:8150)")
      ->option_text("HOST:PORT");
  app.add_option("--api-replay-cache", f.api_replay_cache,
                 "signed API requests remembered so that none is accepted twice; 0 turns the "
                 "check off (only for benchmarks that resend one signed request)")
      ->check(CLI::Range(size_t{0}, size_t{1} << 24))
      ->option_text("N (default 65536)");
  app.add_option("--nbd-listen", f.nbd_listen,
                 "NBD addresses, comma-separated HOST:PORT or unix:PATH (default "
                 "127.0.0.1:10809,unix:DIR/nbd.sock; 'off' disables and needs --vm off). With "
                 "--vm auto and no unix:PATH, DIR/nbd.sock is served too (instances' VMs use it)")
      ->option_text("LIST");
  app.add_option("--nbd-handshake-timeout", f.nbd_handshake_seconds,
                 "seconds an NBD client has from connecting to choosing an export (TLS "
                 "included); past it the connection ends. Transmission has no timeout")
      ->check(CLI::Range(0.1, 3600.0))
      ->capture_default_str();
  app.add_option("--nbd-poll-us", f.nbd_poll_us,
                 "most microseconds a plaintext NBD connection polls its socket before it sleeps "
                 "for the next request, shrinking while its client idles: at queue depth 1 on a "
                 "VM about twice the IOPS for a little more CPU (docs/benchmarks.md); 0 sleeps "
                 "at once")
      ->check(CLI::Range(int64_t{0}, int64_t{10000}))
      ->capture_default_str();
  app.add_option("--nbd-auth", f.nbd_auth,
                 "who may open NBD exports: account (default: a TLS client its account's, a "
                 "client on the unix socket running as stratad's user or root every export, "
                 "anyone else none) or none (any client every export: trusted hosts only)")
      ->check(CLI::IsMember({"account", "none"}))
      ->option_text("MODE");
  app.add_option("--tls", f.tls,
                 "NBD STARTTLS: off, on (offered; the default) or require. Every account has a "
                 "PSK: identity its access key id, key from `strata nbd-key`")
      ->check(CLI::IsMember({"off", "on", "require"}))
      ->option_text("MODE");
  app.add_option("--tls-psk-file", f.tls_psk_file,
                 "more TLS pre-shared keys, IDENTITY:HEXKEY per line (psktool format); the "
                 "identity is an account name or id")
      ->option_text("FILE");
  app.add_option("--tls-x509-dir", f.tls_x509_dir,
                 "ca-cert.pem, server-cert.pem, server-key.pem; a client certificate's common "
                 "name is an account name or id")
      ->option_text("DIR");
  app.add_option("--kms-root-key-file", f.kms_root_key_file,
                 "the KMS root key, 64 hex digits (default DIR.kms-root-key, made on first "
                 "start; STRATA_KMS_ROOT_KEY overrides)")
      ->option_text("FILE");
  app.add_option("--vm", f.vm, "instances' VMs: auto (QEMU when installed) or off")
      ->check(CLI::IsMember({"auto", "off"}))
      ->capture_default_str();
  app.add_option("--vm-accel", f.vm_accel,
                 "auto (KVM with VMX/SVM, else TCG), kvm or tcg (default auto; STRATA_VM_ACCEL "
                 "overrides the default)")
      ->option_text("ACCEL");
  app.add_option("--bucket-dir", f.bucket_dir,
                 "where store/restore image tasks keep bundles, one directory per bucket "
                 "(default DIR/buckets)")
      ->option_text("DIR");
  app.add_option("--region", f.regions,
                 "a region to serve (repeatable, or comma-separated; made when missing); the "
                 "first is the default (default local-1)")
      ->option_text("NAME");
  app.add_option("--peer-region", f.peer_regions,
                 "a region served by another stratad, reached at its --transfer-listen address "
                 "(repeatable)")
      ->option_text("NAME=HOST:PORT");
  app.add_option("--transfer-listen", f.transfer_listen,
                 "serve this store's regions to peers' copies, HOST:PORT (default off; needs "
                 "--transfer-psk-file)")
      ->option_text("ADDR");
  app.add_option("--transfer-psk-file", f.transfer_psk_file,
                 "the keys peers prove in the transfer protocol's TLS, IDENTITY:HEXKEY per line "
                 "(psktool format), the same file on both stratads; needed with --peer-region "
                 "and --transfer-listen")
      ->option_text("FILE");
  app.add_option("--link", f.links,
                 "the simulated WAN link, e.g. bandwidth=100MB,rtt=70ms,jitter=5ms,corrupt=0.001,"
                 "drop=0.0001,streams=4,region=200MB; without FROM:TO it is the default for "
                 "every pair (repeatable)")
      ->option_text("[FROM:TO=]SETTINGS");
  app.add_option("--chunk-size", f.chunk_size, "chunk size of a new store, 4K..4M (default 64K)")
      ->option_text("SIZE");
  app.add_flag("--compression", f.compression, "compress snapshot chunks with zstd");
  app.add_option("--qos", f.qos,
                 "hold each volume's NBD I/O to its type's IOPS and throughput, as EBS does "
                 "(docs/qos.md); off only counts (benchmarks that want raw speed)")
      ->check(CLI::IsMember({"on", "off"}))
      ->capture_default_str();
  app.add_option("--modifying-seconds", f.modifying_seconds,
                 "how long a ModifyVolume shows \"modifying\" before \"optimizing\" (the new "
                 "size and rates apply at once either way)")
      ->check(CLI::Range(0.0, 86400.0))
      ->capture_default_str();
  app.add_option("--optimize-rate", f.optimize_rate,
                 "bytes of a modified volume \"optimized\" per second before the modification "
                 "shows \"completed\" (0: at once)")
      ->option_text("SIZE")
      ->capture_default_str();
  app.add_option("--backend", f.backend,
                 "where regions' catalogs and chunks live: local (the data directory) or rados "
                 "(a Ceph cluster; docs/ceph.md). Default: the store's own, local for a new "
                 "store")
      ->check(CLI::IsMember({"local", "rados"}))
      ->option_text("KIND");
  app.add_option("--ceph-conf", f.ceph.conf_file,
                 "rados: the cluster's ceph.conf (default $CEPH_CONF, then /etc/ceph/ceph.conf)")
      ->option_text("FILE");
  app.add_option("--pool", f.ceph.pool, "rados: pool of catalogs and chunk indexes (replicated)")
      ->option_text("POOL");
  app.add_option("--data-pool", f.ceph.data_pool,
                 "rados: pool of chunk objects, may be erasure-coded (default --pool)")
      ->option_text("POOL");
  app.add_option("--ceph-id", f.ceph.client_id, "rados: the cephx user, without client.")
      ->capture_default_str()
      ->option_text("NAME");
  app.add_option("--ceph-namespace", f.ceph.name_space,
                 "rados: region R's objects live in RADOS namespace NS.R")
      ->capture_default_str()
      ->option_text("NS");
  app.add_option("--ceph-timeout", f.ceph.timeout_seconds,
                 "rados: seconds to connect, and for any cluster operation before it fails")
      ->capture_default_str()
      ->check(CLI::Range(1, 3600))
      ->option_text("SECONDS");
  app.add_option("--volume-heads", f.volume_heads,
                 "rados: where new volumes keep their live data: rados (any node serves them, "
                 "with failover; docs/ceph.md) or local (this node's data directory: faster, "
                 "bound to this node)")
      ->check(CLI::IsMember({"rados", "local"}))
      ->capture_default_str();
  app.add_option("--seconds-per-day", f.seconds_per_day,
                 "how long one of AWS's days lasts for Recycle Bin retention, rule unlock delays, "
                 "snapshot lock durations and cooling-off periods (an hour is a 24th): shorten it "
                 "to rehearse (default 86400)")
      ->check(CLI::Range(uint64_t{1}, uint64_t{86400} * 365));
  app.add_option("--archive-dir", f.archive_dir,
                 "where archived snapshots go (ModifySnapshotTier), each region in a directory "
                 "of its name (default: an archive directory in each region's)")
      ->option_text("DIR");
  app.add_option("--archive-s3", f.archive_s3,
                 "archive to an S3 bucket instead (the Ceph backend's radosgw), e.g. "
                 "http://127.0.0.1:7480/strata-archive; keys from STRATA_ARCHIVE_ACCESS_KEY_ID "
                 "and STRATA_ARCHIVE_SECRET_ACCESS_KEY")
      ->option_text("ENDPOINT/BUCKET");
  app.add_option("--archive-s3-region", f.archive_s3_region,
                 "the SigV4 region of the --archive-s3 endpoint")
      ->capture_default_str();
  app.add_option("--archive-seconds", f.archive_seconds,
                 "archive tier timing model: the fixed part of an archival or a restore")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 86400.0 * 7));
  app.add_option("--archive-rate", f.archive_rate,
                 "archive tier timing model: bytes per second of an archival or a restore "
                 "(K, M, G suffixes)")
      ->capture_default_str();
  app.add_option("--volume-lease", f.volume_lease_seconds,
                 "rados: seconds a node holds a volume's writer lock unless it renews it; a dead "
                 "node's volumes can be attached elsewhere after this")
      ->capture_default_str()
      ->check(CLI::Range(3, 3600))
      ->option_text("SECONDS");
  app.add_option("--gc-grace", f.ceph.gc_grace_seconds,
                 "rados: seconds an unreferenced chunk stays before garbage collection frees it "
                 "(other nodes may be about to commit it)")
      ->capture_default_str()
      ->option_text("SECONDS");
  app.set_config("--config", "",
                 "read options from FILE: one 'option = value' per line, names "
                 "as the long options without dashes (e.g. backend = rados)");
}

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "stratad: %s\n", std::string(s.message()).c_str());
  return 2;
}

// --api-listen HOST:PORT ([V6]:PORT too) as the HTTP server's options.
absl::StatusOr<strata::api::HttpServerOptions> ApiOptions(const std::string& listen) {
  strata::api::HttpServerOptions options;
  const size_t colon = listen.rfind(':');
  uint32_t port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(listen.substr(colon + 1), &port) ||
      port > 65535) {
    return absl::InvalidArgumentError("--api-listen takes HOST:PORT, e.g. 127.0.0.1:8150");
  }
  options.host = listen.substr(0, colon);
  if (options.host.size() > 2 && options.host.front() == '[') {
    options.host = options.host.substr(1, options.host.size() - 2);
  }
  options.port = static_cast<uint16_t>(port);
  return options;
}

// The NBD server's TLS and access settings; returns them as the start-up log names them.
std::string SetTls(const Flags& f, strata::nbd::NbdServerOptions& options) {
  // The accounts' own keys (options.tls.psk_lookup) are always there, so TLS needs no file.
  options.tls.psk_file = f.tls_psk_file;
  options.tls.x509_dir = f.tls_x509_dir;
  options.auth =
      f.nbd_auth == "none" ? strata::nbd::NbdAuth::kNone : strata::nbd::NbdAuth::kAccount;
  options.tls_mode = f.tls == "off"  ? strata::nbd::TlsMode::kOff
                     : f.tls == "on" ? strata::nbd::TlsMode::kOn
                                     : strata::nbd::TlsMode::kRequire;
  return absl::StrCat(f.tls, ", NBD auth ", f.nbd_auth);
}

absl::Status LoadRootKey(const Flags& f, strata::StoreOptions& options) {
  const std::string path = f.kms_root_key_file.empty()
                               ? strata::tools::DefaultKmsRootKeyPath(f.data_dir)
                               : f.kms_root_key_file;
  bool generated = false;
  absl::StatusOr<strata::SecretBytes> root_key =
      strata::tools::LoadKmsRootKey(path, /*generate=*/true, &generated);
  if (!root_key.ok()) return root_key.status();
  options.kms_root_key = std::move(*root_key);
  if (generated) {
    STRATA_LOG(kInfo, "generated the KMS root key in ", path,
               " (mode 0600); keep it safe and apart from the data directory: without it "
               "nothing encrypted can be opened");
  }
  return absl::OkStatus();
}

// Where NBD listens. Instances' VMs reach their disks through its unix socket, so with VMs on
// and no unix socket in the list, DIR/nbd.sock is served too; *socket is the one they use.
absl::StatusOr<std::vector<std::string>> NbdAddresses(const Flags& f, std::string* socket) {
  const std::string listen =
      f.nbd_listen.empty() ? "127.0.0.1:10809,unix:" + f.data_dir + "/nbd.sock" : f.nbd_listen;
  std::vector<std::string> addresses;
  if (listen != "off") addresses = absl::StrSplit(listen, ',', absl::SkipEmpty());
  for (const std::string& a : addresses) {
    if (a.rfind("unix:", 0) == 0 && socket->empty()) *socket = a.substr(5);
  }
  if (f.vm == "auto" && listen == "off") {
    // An instance without its VM would be reported running with no machine behind it.
    return absl::InvalidArgumentError(
        "--nbd-listen off leaves instances' VMs without their disks: give --vm off too, or "
        "let stratad serve NBD");
  }
  if (f.vm == "auto" && socket->empty()) {
    *socket = f.data_dir + "/nbd.sock";
    addresses.push_back("unix:" + *socket);
    STRATA_LOG(kInfo, "--nbd-listen has no unix socket; instances' VMs use unix:", *socket);
  }
  return addresses;
}

// QEMU for instances (--vm auto), or null when it is not installed (logged).
absl::StatusOr<std::unique_ptr<strata::vm::QemuHypervisor>> StartHypervisor(
    const Flags& f, const std::string& nbd_socket) {
  if (f.vm != "auto") return nullptr;
  strata::vm::QemuOptions options;
  const char* accel_env = std::getenv("STRATA_VM_ACCEL");
  options.accel = !f.vm_accel.empty() ? f.vm_accel : accel_env != nullptr ? accel_env : "auto";
  options.nbd_socket = std::filesystem::absolute(nbd_socket).string();
  options.state_dir = f.data_dir + "/instances";
  absl::StatusOr<std::unique_ptr<strata::vm::QemuHypervisor>> created =
      strata::vm::QemuHypervisor::Create(options);
  if (created.ok()) {
    STRATA_LOG(kInfo, "instances boot as VMs: ", (*created)->name());
    return created;
  }
  if (created.status().code() == absl::StatusCode::kFailedPrecondition) {
    STRATA_LOG(kWarning, created.status().message());
    return nullptr;
  }
  return created.status();
}

// --region, --peer-region and --link into the store's options; returns the regions to serve.
absl::StatusOr<std::vector<std::string>> SetRegions(const Flags& f, strata::StoreOptions& options) {
  std::vector<std::string> regions;
  for (const std::string& list : f.regions) {
    for (absl::string_view name : absl::StrSplit(list, ',', absl::SkipEmpty())) {
      regions.emplace_back(name);
    }
  }
  if (!regions.empty()) options.default_region = regions.front();
  for (const std::string& peer : f.peer_regions) {
    const size_t eq = peer.find('=');
    if (eq == std::string::npos || eq == 0 || peer.rfind(':') < eq) {
      return absl::InvalidArgumentError(
          absl::StrCat("--peer-region takes NAME=HOST:PORT, not ", peer));
    }
    options.peer_regions[peer.substr(0, eq)] = peer.substr(eq + 1);
  }
  options.transfer_psk_file = f.transfer_psk_file;
  if (f.transfer_listen != "off" && f.transfer_psk_file.empty()) {
    return absl::InvalidArgumentError(
        "--transfer-listen needs --transfer-psk-file: peers authenticate with its keys (e.g. "
        "echo \"peers:$(openssl rand -hex 32)\" > transfer.psk, the same file for both stratads)");
  }
  for (const std::string& link : f.links) {
    // "FROM:TO=SETTINGS" names a pair; settings alone are the default.
    const size_t eq = link.find('=');
    const std::string head = eq == std::string::npos ? "" : link.substr(0, eq);
    const bool pair = head.find(':') != std::string::npos;
    const std::string key = pair ? head : "";
    const std::string settings = pair ? link.substr(eq + 1) : link;
    strata::LinkModel base = options.links.contains("") ? options.links[""] : strata::LinkModel{};
    absl::StatusOr<strata::LinkModel> parsed = strata::ParseLinkModel(settings, base);
    if (!parsed.ok()) return parsed.status();
    options.links[key] = *parsed;
  }
  return regions;
}

// Makes the regions asked for, and the admin account on first start; logs what the store holds.
absl::Status PrepareStore(strata::Store& store, const std::vector<std::string>& regions,
                          const std::string& dir) {
  for (const std::string& name : regions) {
    if (store.GetRegion(name).ok()) continue;
    if (absl::StatusOr<strata::Region*> made = store.CreateRegion(name); !made.ok()) {
      return made.status();
    }
    STRATA_LOG(kInfo, "created region ", name);
  }
  absl::StatusOr<bool> created = strata::tools::EnsureAdmin(store, dir);
  if (!created.ok()) return created.status();
  if (*created)
    STRATA_LOG(kInfo, "created the admin account; credentials in ", dir, "/credentials");
  for (const std::string& name : store.ListRegions()) {
    strata::Region* region = *store.GetRegion(name);
    auto volumes = region->ListVolumes();
    auto snapshots = region->ListSnapshots();
    STRATA_LOG(kInfo, "region ", name, ": ", volumes.ok() ? volumes->size() : 0, " volumes, ",
               snapshots.ok() ? snapshots->size() : 0, " snapshots, chunk size ",
               region->chunk_size_bytes());
  }
  return absl::OkStatus();
}

// Where each instance volume is exported (DescribeInstances): the NBD server's first TCP
// address as bound (a port 0 is resolved by now), else its unix socket.
std::string NbdUriTemplate(const std::vector<std::string>& addresses, bool tls_identity) {
  std::string uri;
  for (const std::string& a : addresses) {
    if (a.rfind("unix:", 0) != 0) {
      // Over TCP an account connects with TLS, its access key id the PSK identity (libnbd adds
      // the key with ?tls-psk-file=FILE, from `strata nbd-key --psk-file FILE`).
      return tls_identity ? absl::StrCat("nbds://{access_key_id}@", a, "/{export}")
                          : absl::StrCat("nbd://", a, "/{export}");
    }
    if (uri.empty()) {
      uri = absl::StrCat("nbd+unix:///{export}?socket=",
                         std::filesystem::absolute(a.substr(5)).string());
    }
  }
  return uri;
}

}  // namespace

int main(int argc, char** argv) {
  Flags f;
  CLI::App app(
      "stratad: the Strata daemon. Opens the store, serves the AWS-compatible API and NBD, and "
      "runs until SIGTERM or SIGINT, then stops cleanly.",
      "stratad");
  AddFlags(app, f);
  if (std::optional<int> rc = strata::tools::ParseCommandLine(app, argc, argv); rc.has_value()) {
    return *rc;
  }
  strata::StoreOptions options;
  absl::StatusOr<uint64_t> chunk = f.chunk_size.empty()
                                       ? absl::StatusOr<uint64_t>(strata::kChunkSizeBytesDefault)
                                       : strata::tools::ParseSize(f.chunk_size, "--chunk-size");
  if (!chunk.ok()) return Fail(chunk.status());
  options.chunk_size_bytes = *chunk;
  options.compression = f.compression;
  options.qos = f.qos == "on";
  options.volume_heads_in_rados = f.volume_heads == "rados";
  options.volume_lease_seconds = f.volume_lease_seconds;
  options.seconds_per_day = f.seconds_per_day;
  options.archive.dir = f.archive_dir;
  options.archive.fixed_ms = static_cast<uint64_t>(std::llround(f.archive_seconds * 1000));
  absl::StatusOr<uint64_t> archive_rate =
      strata::tools::ParseSize(f.archive_rate, "--archive-rate");
  if (!archive_rate.ok()) return Fail(archive_rate.status());
  if (*archive_rate == 0) return Fail(absl::InvalidArgumentError("--archive-rate must not be 0"));
  options.archive.bytes_per_second = *archive_rate;
  if (!f.archive_s3.empty()) {
    const size_t slash = f.archive_s3.rfind('/');
    const size_t scheme = f.archive_s3.find("://");
    if (scheme == std::string::npos || slash == std::string::npos || slash <= scheme + 3 ||
        slash + 1 == f.archive_s3.size()) {
      return Fail(absl::InvalidArgumentError(absl::StrCat(
          "--archive-s3 ", f.archive_s3, ": give ENDPOINT/BUCKET, e.g. http://127.0.0.1:7480/b")));
    }
    options.archive.s3_endpoint = f.archive_s3.substr(0, slash);
    options.archive.s3_bucket = f.archive_s3.substr(slash + 1);
    options.archive.s3_region = f.archive_s3_region;
    const char* key = std::getenv("STRATA_ARCHIVE_ACCESS_KEY_ID");
    const char* secret = std::getenv("STRATA_ARCHIVE_SECRET_ACCESS_KEY");
    if (key == nullptr || secret == nullptr) {
      return Fail(absl::InvalidArgumentError(
          "--archive-s3 needs STRATA_ARCHIVE_ACCESS_KEY_ID and STRATA_ARCHIVE_SECRET_ACCESS_KEY"));
    }
    options.archive.s3_access_key_id = key;
    options.archive.s3_secret_access_key = secret;
  }
  absl::StatusOr<uint64_t> optimize_rate =
      f.optimize_rate == "0" ? absl::StatusOr<uint64_t>(0)
                             : strata::tools::ParseSize(f.optimize_rate, "--optimize-rate");
  if (!optimize_rate.ok()) return Fail(optimize_rate.status());
  options.volume_modification.modifying_ms =
      static_cast<uint64_t>(std::llround(f.modifying_seconds * 1000));
  options.volume_modification.optimize_bytes_per_second = *optimize_rate;
  if (f.backend == "rados") {
    if (f.ceph.pool.empty())
      return Fail(absl::InvalidArgumentError("--backend rados needs --pool"));
    options.ceph = f.ceph;
  } else {
    // Without --backend rados a RADOS store opens with the settings it recorded; a RADOS option
    // given here would be ignored, so it is refused.
    for (const char* flag : {"--pool", "--data-pool", "--ceph-conf", "--ceph-id",
                             "--ceph-namespace", "--ceph-timeout", "--gc-grace"}) {
      if (app.count(flag) > 0) {
        return Fail(absl::InvalidArgumentError(absl::StrCat(
            flag, " is for --backend rados (with the store's --pool and the others)")));
      }
    }
  }
  const std::string& dir = f.data_dir;

  // Block the stop signals before any thread starts, then wait for one synchronously.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);
  // A peer that hangs up under a TLS write (OpenSSL uses write(2)) must not kill the daemon.
  std::signal(SIGPIPE, SIG_IGN);
  // Keys live in this process's memory: no core dumps of it (nor ptrace by other users)
  // unless asked for.
  if (std::getenv("STRATA_ALLOW_CORE_DUMPS") == nullptr) ::prctl(PR_SET_DUMPABLE, 0);

  const bool api_enabled = f.api_listen != "off";
  strata::api::HttpServerOptions api_options;
  if (api_enabled) {
    absl::StatusOr<strata::api::HttpServerOptions> parsed = ApiOptions(f.api_listen);
    if (!parsed.ok()) return Fail(parsed.status());
    api_options = *parsed;
  }
  strata::nbd::NbdServerOptions nbd_options;
  nbd_options.handshake_timeout = absl::Seconds(f.nbd_handshake_seconds);
  nbd_options.poll = absl::Microseconds(f.nbd_poll_us);
  const std::string tls_mode = SetTls(f, nbd_options);
  if (absl::Status s = LoadRootKey(f, options); !s.ok()) return Fail(s);
  std::string nbd_socket;
  absl::StatusOr<std::vector<std::string>> nbd_addresses = NbdAddresses(f, &nbd_socket);
  if (!nbd_addresses.ok()) return Fail(nbd_addresses.status());
  absl::StatusOr<std::unique_ptr<strata::vm::QemuHypervisor>> hypervisor =
      StartHypervisor(f, nbd_socket);
  if (!hypervisor.ok()) return Fail(hypervisor.status());
  options.hypervisor = hypervisor->get();
  absl::StatusOr<std::vector<std::string>> regions = SetRegions(f, options);
  if (!regions.ok()) return Fail(regions.status());

  auto store = strata::Store::Open(dir, options);
  if (!store.ok()) return Fail(store.status());
  if (absl::Status s = PrepareStore(**store, *regions, dir); !s.ok()) return Fail(s);
  std::unique_ptr<strata::ExportCatalog> exports = strata::NewStoreExportCatalog(**store);
  std::unique_ptr<strata::nbd::NbdServer> nbd;
  if (!nbd_addresses->empty()) {
    nbd_options.listen = *nbd_addresses;
    nbd_options.tls.psk_lookup = [catalog = exports.get()](const std::string& identity) {
      return catalog->NbdKeyFor(identity);
    };
    nbd = std::make_unique<strata::nbd::NbdServer>(*exports, nbd_options);
    if (absl::Status s = nbd->Start(); !s.ok()) return Fail(s);
    STRATA_LOG(kInfo, "NBD on ", absl::StrJoin(nbd->addresses(), " "),
               " (exports: attached volumes by volume id, read-write; completed snapshots by "
               "snapshot id, read-only; TLS ",
               tls_mode, ")");
  }
  std::unique_ptr<strata::tools::TransferListener> transfer;
  if (f.transfer_listen != "off") {
    transfer = std::make_unique<strata::tools::TransferListener>(**store, f.transfer_listen);
    if (absl::Status s = transfer->Start(); !s.ok()) return Fail(s);
    STRATA_LOG(kInfo, "transfer protocol on ", transfer->bound(),
               " (peers copy this store's snapshots from here)");
  }
  for (const auto& [name, address] : options.peer_regions) {
    STRATA_LOG(kInfo, "peer region ", name, " at ", address);
  }
  std::unique_ptr<strata::api::ApiServer> api;
  if (api_enabled) {
    strata::api::Ec2Options ec2_options;
    ec2_options.bucket_dir = f.bucket_dir.empty() ? dir + "/buckets" : f.bucket_dir;
    ec2_options.nbd_uri_template =
        NbdUriTemplate(nbd != nullptr ? nbd->addresses() : std::vector<std::string>{},
                       nbd_options.auth == strata::nbd::NbdAuth::kAccount &&
                           nbd_options.tls_mode != strata::nbd::TlsMode::kOff);
    api = std::make_unique<strata::api::ApiServer>(**store, api_options, ec2_options,
                                                   f.api_replay_cache);
    if (absl::Status s = api->Start(); !s.ok()) return Fail(s);
    STRATA_LOG(kInfo, "API on http://", f.api_listen.substr(0, f.api_listen.rfind(':')), ":",
               api->port(), " (aws --endpoint-url; credentials in ", dir, "/credentials)");
  }
  STRATA_LOG(kInfo, "stratad serving store ", dir, " (pid ", getpid(), "), backend ",
             (*store)->DescribeBackend(), "; SIGTERM or Ctrl-C stops");
  if (options.archive.s3_endpoint.empty()) {
    STRATA_LOG(
        kInfo, "archive tier: ",
        options.archive.dir.empty() ? "each region's archive directory" : options.archive.dir,
        absl::StartsWith((*store)->DescribeBackend(), "rados")
            ? " (this node's only: give --archive-s3 so that every node shares it)"
            : "");
  } else {
    STRATA_LOG(kInfo, "archive tier: s3 ", options.archive.s3_endpoint, "/",
               options.archive.s3_bucket);
  }
  int signal = 0;
  sigwait(&stop, &signal);
  STRATA_LOG(kInfo, "signal ", signal, ": stopping cleanly");
  if (api != nullptr) api->Stop();
  api.reset();  // Joins store-image tasks, which use the store.
  if (*hypervisor != nullptr) (*hypervisor)->StopAll();  // VMs first: their disks are NBD exports.
  if (nbd != nullptr) nbd->Stop();
  transfer.reset();  // Peers' copies from here end; they resume when this store is back.
  store->reset();
  STRATA_LOG(kInfo, "stopped");
  return 0;
}
