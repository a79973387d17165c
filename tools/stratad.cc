// stratad: the Strata daemon. Opens the store, serves the AWS-compatible API, and keeps running
// and NBD, and keeps running until SIGTERM or SIGINT, then stops cleanly (connections close,
// pending snapshots complete, volumes flush).

#include <sys/prctl.h>
#include <sys/stat.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "admin.h"
#include "api_server.h"
#include "cli_args.h"
#include "nbd_server.h"
#include "qemu_hypervisor.h"
#include "strata/export.h"
#include "strata/store.h"
#include "strata/transfer.h"
#include "transfer_listener.h"
#include "util/log.h"

namespace {

constexpr char kUsage[] =
    "usage: stratad [--data-dir DIR] [--api-listen HOST:PORT] [--chunk-size SIZE] [--compression]\n"
    "  --data-dir DIR     store directory (default ./data; created if missing)\n"
    "  --api-listen ADDR  control-plane API address (default 127.0.0.1:8150; 'off' disables)\n"
    "  --nbd-listen LIST  NBD addresses, comma-separated HOST:PORT or unix:PATH\n"
    "                     (default 127.0.0.1:10809,unix:DIR/nbd.sock; 'off' disables and\n"
    "                     needs --vm off). With --vm auto and no unix:PATH, DIR/nbd.sock is\n"
    "                     served too (instances' VMs use it)\n"
    "  --tls MODE         NBD STARTTLS: off, on (offered) or require (default: on when\n"
    "                     credentials are given, else off)\n"
    "  --tls-psk-file F   TLS pre-shared keys, IDENTITY:HEXKEY per line (psktool format);\n"
    "                     the identity is an account name or id\n"
    "  --tls-x509-dir D   ca-cert.pem, server-cert.pem, server-key.pem; a client certificate's\n"
    "                     common name is an account name or id\n"
    "  --kms-root-key-file F  the KMS root key, 64 hex digits (default DIR.kms-root-key,\n"
    "                     made on first start; STRATA_KMS_ROOT_KEY overrides)\n"
    "  --vm MODE          instances' VMs: auto (QEMU when installed) or off (default auto)\n"
    "  --vm-accel ACCEL   auto (KVM with VMX/SVM, else TCG), kvm or tcg (default auto;\n"
    "                     STRATA_VM_ACCEL overrides the default)\n"
    "  --bucket-dir DIR   where store/restore image tasks keep bundles, one directory per\n"
    "                     bucket (default DATA_DIR/buckets)\n"
    "  --region NAME      a region to serve (repeatable, or comma-separated; made when\n"
    "                     missing); the first is the default (default local-1)\n"
    "  --peer-region NAME=HOST:PORT  a region served by another stratad, reached at its\n"
    "                     --transfer-listen address (repeatable)\n"
    "  --transfer-listen ADDR  serve this store's regions to peers' copies, HOST:PORT\n"
    "                     (default off)\n"
    "  --link [FROM:TO=]SETTINGS  the simulated WAN link, e.g. bandwidth=100MB,rtt=70ms,\n"
    "                     jitter=5ms,corrupt=0.001,drop=0.0001,streams=4,region=200MB; without\n"
    "                     FROM:TO it is the default for every pair (repeatable)\n"
    "  --chunk-size SIZE  chunk size of a new store, 4K..4M (default 64K)\n"
    "  --compression      compress snapshot chunks with zstd\n";

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "stratad: %s\n", std::string(s.message()).c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  auto args = strata::tools::Args::Parse(
      argc, argv, 1,
      {"data-dir", "chunk-size", "api-listen", "nbd-listen", "tls", "tls-psk-file", "tls-x509-dir",
       "kms-root-key-file", "vm", "vm-accel", "bucket-dir", "region", "peer-region",
       "transfer-listen", "link"},
      {"compression", "help"});
  if (!args.ok()) {
    std::fprintf(stderr, "stratad: %s\n%s", std::string(args.status().message()).c_str(), kUsage);
    return 2;
  }
  if (args->Has("help")) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (!args->positional().empty()) {
    std::fprintf(stderr, "stratad: unexpected argument %s\n%s", args->positional()[0].c_str(),
                 kUsage);
    return 2;
  }
  strata::StoreOptions options;
  auto chunk = args->GetSize("chunk-size", strata::kChunkSizeBytesDefault);
  if (!chunk.ok()) return Fail(chunk.status());
  options.chunk_size_bytes = *chunk;
  options.compression = args->Has("compression");
  const std::string dir = args->Get("data-dir", "./data");

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

  strata::api::HttpServerOptions api_options;
  const std::string listen = args->Get("api-listen", "127.0.0.1:8150");
  const bool api_enabled = listen != "off";
  if (api_enabled) {
    const size_t colon = listen.rfind(':');
    uint32_t port = 0;
    if (colon == std::string::npos || !absl::SimpleAtoi(listen.substr(colon + 1), &port) ||
        port > 65535) {
      return Fail(absl::InvalidArgumentError("--api-listen takes HOST:PORT, e.g. 127.0.0.1:8150"));
    }
    api_options.host = listen.substr(0, colon);
    if (api_options.host.size() > 2 && api_options.host.front() == '[') {
      api_options.host = api_options.host.substr(1, api_options.host.size() - 2);
    }
    api_options.port = static_cast<uint16_t>(port);
  }

  strata::nbd::NbdServerOptions nbd_options;
  nbd_options.tls.psk_file = args->Get("tls-psk-file", "");
  nbd_options.tls.x509_dir = args->Get("tls-x509-dir", "");
  const bool have_credentials =
      !nbd_options.tls.psk_file.empty() || !nbd_options.tls.x509_dir.empty();
  const std::string tls_mode = args->Get("tls", have_credentials ? "on" : "off");
  if (tls_mode == "off") {
    nbd_options.tls_mode = strata::nbd::TlsMode::kOff;
  } else if (tls_mode == "on" || tls_mode == "require") {
    if (!have_credentials) {
      return Fail(absl::InvalidArgumentError("--tls " + tls_mode +
                                             " needs --tls-psk-file or --tls-x509-dir"));
    }
    nbd_options.tls_mode =
        tls_mode == "on" ? strata::nbd::TlsMode::kOn : strata::nbd::TlsMode::kRequire;
  } else {
    return Fail(absl::InvalidArgumentError("--tls takes off, on or require"));
  }

  const std::string root_key_path =
      args->Get("kms-root-key-file", strata::tools::DefaultKmsRootKeyPath(dir));
  bool generated_root_key = false;
  absl::StatusOr<strata::SecretBytes> root_key =
      strata::tools::LoadKmsRootKey(root_key_path, /*generate=*/true, &generated_root_key);
  if (!root_key.ok()) return Fail(root_key.status());
  options.kms_root_key = std::move(*root_key);
  if (generated_root_key) {
    STRATA_LOG(kInfo, "generated the KMS root key in ", root_key_path,
               " (mode 0600); keep it safe and apart from the data directory: without it "
               "nothing encrypted can be opened");
  }

  // Instances' VMs reach their disks through the NBD server's unix socket.
  const std::string nbd_listen =
      args->Get("nbd-listen", "127.0.0.1:10809,unix:" + dir + "/nbd.sock");
  std::vector<std::string> nbd_addresses;
  if (nbd_listen != "off") nbd_addresses = absl::StrSplit(nbd_listen, ',', absl::SkipEmpty());
  std::string nbd_socket;
  for (const std::string& a : nbd_addresses) {
    if (a.rfind("unix:", 0) == 0 && nbd_socket.empty()) nbd_socket = a.substr(5);
  }
  std::unique_ptr<strata::vm::QemuHypervisor> hypervisor;
  const std::string vm_mode = args->Get("vm", "auto");
  if (vm_mode != "auto" && vm_mode != "off") {
    return Fail(absl::InvalidArgumentError("--vm takes auto or off"));
  }
  if (vm_mode == "auto" && nbd_listen == "off") {
    // An instance without its VM would be reported running with no machine behind it.
    return Fail(absl::InvalidArgumentError(
        "--nbd-listen off leaves instances' VMs without their disks: give --vm off too, or "
        "let stratad serve NBD"));
  }
  if (vm_mode == "auto" && nbd_socket.empty()) {
    // Instances' VMs reach their disks through a unix socket: serve the default one too.
    nbd_socket = dir + "/nbd.sock";
    nbd_addresses.push_back("unix:" + nbd_socket);
    STRATA_LOG(kInfo, "--nbd-listen has no unix socket; instances' VMs use unix:", nbd_socket);
  }
  if (vm_mode == "auto") {
    strata::vm::QemuOptions vm_options;
    const char* accel_env = std::getenv("STRATA_VM_ACCEL");
    vm_options.accel = args->Get("vm-accel", accel_env != nullptr ? accel_env : "auto");
    vm_options.nbd_socket = std::filesystem::absolute(nbd_socket).string();
    vm_options.state_dir = dir + "/instances";
    absl::StatusOr<std::unique_ptr<strata::vm::QemuHypervisor>> created_vm =
        strata::vm::QemuHypervisor::Create(vm_options);
    if (created_vm.ok()) {
      hypervisor = std::move(*created_vm);
      options.hypervisor = hypervisor.get();
      STRATA_LOG(kInfo, "instances boot as VMs: ", hypervisor->name());
    } else if (created_vm.status().code() == absl::StatusCode::kFailedPrecondition) {
      STRATA_LOG(kWarning, created_vm.status().message());
    } else {
      return Fail(created_vm.status());
    }
  }

  std::vector<std::string> regions;
  for (const std::string& list : args->GetAll("region")) {
    for (absl::string_view name : absl::StrSplit(list, ',', absl::SkipEmpty())) {
      regions.emplace_back(name);
    }
  }
  if (!regions.empty()) options.default_region = regions.front();
  for (const std::string& peer : args->GetAll("peer-region")) {
    const size_t eq = peer.find('=');
    if (eq == std::string::npos || eq == 0 || peer.rfind(':') < eq) {
      return Fail(absl::InvalidArgumentError(
          absl::StrCat("--peer-region takes NAME=HOST:PORT, not ", peer)));
    }
    options.peer_regions[peer.substr(0, eq)] = peer.substr(eq + 1);
  }
  for (const std::string& link : args->GetAll("link")) {
    // "FROM:TO=SETTINGS" names a pair; settings alone are the default.
    const size_t eq = link.find('=');
    const std::string head = eq == std::string::npos ? "" : link.substr(0, eq);
    const bool pair = head.find(':') != std::string::npos;
    const std::string key = pair ? head : "";
    const std::string settings = pair ? link.substr(eq + 1) : link;
    strata::LinkModel base = options.links.contains("") ? options.links[""] : strata::LinkModel{};
    absl::StatusOr<strata::LinkModel> parsed = strata::ParseLinkModel(settings, base);
    if (!parsed.ok()) return Fail(parsed.status());
    options.links[key] = *parsed;
  }

  auto store = strata::Store::Open(dir, options);
  if (!store.ok()) return Fail(store.status());
  for (const std::string& name : regions) {
    if ((*store)->GetRegion(name).ok()) continue;
    if (absl::StatusOr<strata::Region*> made = (*store)->CreateRegion(name); !made.ok()) {
      return Fail(made.status());
    }
    STRATA_LOG(kInfo, "created region ", name);
  }
  absl::StatusOr<bool> created = strata::tools::EnsureAdmin(**store, dir);
  if (!created.ok()) return Fail(created.status());
  if (*created)
    STRATA_LOG(kInfo, "created the admin account; credentials in ", dir, "/credentials");
  for (const std::string& name : (*store)->ListRegions()) {
    auto region = *(*store)->GetRegion(name);
    auto volumes = region->ListVolumes();
    auto snapshots = region->ListSnapshots();
    STRATA_LOG(kInfo, "region ", name, ": ", volumes.ok() ? volumes->size() : 0, " volumes, ",
               snapshots.ok() ? snapshots->size() : 0, " snapshots, chunk size ",
               region->chunk_size_bytes());
  }
  std::unique_ptr<strata::ExportCatalog> exports = strata::NewStoreExportCatalog(**store);
  std::unique_ptr<strata::nbd::NbdServer> nbd;
  if (nbd_listen != "off") {
    nbd_options.listen = nbd_addresses;
    nbd = std::make_unique<strata::nbd::NbdServer>(*exports, nbd_options);
    if (absl::Status s = nbd->Start(); !s.ok()) return Fail(s);
    STRATA_LOG(kInfo, "NBD on ", absl::StrJoin(nbd->addresses(), " "),
               " (exports: attached volumes by volume id, read-write; completed snapshots by "
               "snapshot id, read-only; TLS ",
               tls_mode, ")");
  }
  std::unique_ptr<strata::tools::TransferListener> transfer;
  if (const std::string at = args->Get("transfer-listen", "off"); at != "off") {
    transfer = std::make_unique<strata::tools::TransferListener>(**store, at);
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
    ec2_options.bucket_dir = args->Get("bucket-dir", dir + "/buckets");
    // Where each instance volume is exported (DescribeInstances): the NBD server's first TCP
    // address as bound (a port 0 is resolved by now), else its unix socket.
    for (const std::string& a : nbd != nullptr ? nbd->addresses() : std::vector<std::string>{}) {
      const bool unix_socket = a.rfind("unix:", 0) == 0;
      if (!unix_socket) {
        ec2_options.nbd_uri_template = absl::StrCat("nbd://", a, "/{export}");
        break;
      }
      if (ec2_options.nbd_uri_template.empty()) {
        ec2_options.nbd_uri_template = absl::StrCat(
            "nbd+unix:///{export}?socket=", std::filesystem::absolute(a.substr(5)).string());
      }
    }
    api = std::make_unique<strata::api::ApiServer>(**store, api_options, ec2_options);
    if (absl::Status s = api->Start(); !s.ok()) return Fail(s);
    STRATA_LOG(kInfo, "API on http://", listen.substr(0, listen.rfind(':')), ":", api->port(),
               " (aws --endpoint-url; credentials in ", dir, "/credentials)");
  }
  STRATA_LOG(kInfo, "stratad serving store ", dir, " (pid ", getpid(),
             "); SIGTERM or Ctrl-C stops");
  int signal = 0;
  sigwait(&stop, &signal);
  STRATA_LOG(kInfo, "signal ", signal, ": stopping cleanly");
  if (api != nullptr) api->Stop();
  api.reset();  // Joins store-image tasks, which use the store.
  if (hypervisor != nullptr) hypervisor->StopAll();  // VMs first: their disks are NBD exports.
  if (nbd != nullptr) nbd->Stop();
  transfer.reset();  // Peers' copies from here end; they resume when this store is back.
  store->reset();
  STRATA_LOG(kInfo, "stopped");
  return 0;
}
