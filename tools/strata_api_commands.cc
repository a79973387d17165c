// strata's subcommands that go through stratad's API (stratad running; requests signed with
// DIR/credentials or the AWS_* variables, as the aws CLI signs them): status, attachments,
// instances and their consoles, import-image, and any EC2 call; plus init and env, which set
// up and print the credentials those calls use.

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "admin.h"
#include "api_client.h"
#include "nbd_client.h"
#include "nlohmann/json.hpp"
#include "strata/export.h"
#include "strata/store.h"
#include "strata/transfer.h"
#include "strata_commands.h"

namespace strata::tools {
namespace {

using json = nlohmann::json;

// Prints JSON, or for --output text|table the rows of the first list in it.
void PrintResult(const std::string& text, const std::string& format) {
  json value = json::parse(text, nullptr, false);
  if (format == "json" || value.is_discarded()) {
    std::printf("%s\n", text.c_str());
    return;
  }
  const json* rows = &value;
  if (value.is_object()) {
    for (auto it = value.begin(); it != value.end(); ++it) {
      if (it->is_array()) {
        rows = &*it;
        break;
      }
    }
  }
  std::vector<json> items =
      rows->is_array() ? std::vector<json>(rows->begin(), rows->end()) : std::vector<json>{*rows};
  std::vector<std::string> columns;
  for (const json& item : items) {
    if (!item.is_object()) continue;
    for (auto it = item.begin(); it != item.end(); ++it) {
      if (!it->is_structured() &&
          std::find(columns.begin(), columns.end(), it.key()) == columns.end()) {
        columns.push_back(it.key());
      }
    }
  }
  // Ids that every row has first (text output is most often cut for them), then other ids,
  // then the rest.
  auto rank = [&](const std::string& c) {
    if (c == "Time") return 0;  // A time series reads by time.
    if (c.size() <= 2 || !c.ends_with("Id")) return 2;
    for (const json& item : items) {
      if (!item.is_object() || !item.contains(c) || item[c] == "") return 1;
    }
    return 0;
  };
  std::stable_sort(columns.begin(), columns.end(),
                   [&](const std::string& x, const std::string& y) { return rank(x) < rank(y); });
  if (format == "table") {
    for (size_t i = 0; i < columns.size(); ++i)
      std::printf("%s%s", i ? "\t" : "", columns[i].c_str());
    std::printf("\n");
  }
  for (const json& item : items) {
    if (!item.is_object()) {
      std::printf("%s\n", item.is_string() ? item.get<std::string>().c_str() : item.dump().c_str());
      continue;
    }
    for (size_t i = 0; i < columns.size(); ++i) {
      const json& v = item.contains(columns[i]) ? item[columns[i]] : json("");
      std::printf("%s%s", i ? "\t" : "",
                  v.is_string() ? v.get<std::string>().c_str() : v.dump().c_str());
    }
    std::printf("\n");
  }
}

// Runs one EC2 call; prints an API error as the aws CLI does and returns 254 for it.
int Ec2(const ApiEndpoint& endpoint, const std::string& action,
        const std::map<std::string, std::string>& params, json* out, const std::string& format) {
  absl::StatusOr<ApiResult> result = CallEc2(endpoint, action, params);
  if (!result.ok()) return Fail(result.status());
  if (!result->error_code.empty()) {
    std::fprintf(stderr, "strata: An error occurred (%s) when calling the %s operation: %s\n",
                 result->error_code.c_str(), action.c_str(), result->error_message.c_str());
    return 254;
  }
  if (out != nullptr) *out = json::parse(result->json, nullptr, false);
  if (!format.empty()) PrintResult(result->json, format);
  return 0;
}

json AsList(const json& v) { return v.is_array() ? v : json::array(); }

// Waits for a snapshot to leave "pending"; returns its final status.
absl::StatusOr<std::string> WaitForSnapshot(const ApiEndpoint& endpoint,
                                            const std::string& snapshot) {
  for (int i = 0; i < 36000; ++i) {
    absl::StatusOr<ApiResult> r =
        CallEc2(endpoint, "DescribeSnapshots", {{"SnapshotId.1", snapshot}});
    if (!r.ok()) return r.status();
    if (!r->error_code.empty()) return absl::InternalError(r->error_message);
    const json out = json::parse(r->json, nullptr, false);
    const json list = AsList(out["snapshotSet"]);
    const std::string state = list.empty() ? "" : list[0].value("status", "");
    if (state != "pending") return state;
    usleep(100000);
  }
  return absl::DeadlineExceededError(absl::StrCat(snapshot, " is still pending"));
}

// import-image FILE --name NAME: a blank volume of FILE's size (rounded up to GiB), attached
// and written over NBD (all-zero pieces skipped: the volume stays thin), detached, snapshot,
// registered as an image whose root device /dev/sda1 maps the snapshot. The volume is deleted
// at the end; on failure everything made so far is removed.
int ImportImage(const CommandLine& cl, const ApiEndpoint& endpoint) {
  const std::string& name = cl.name;
  const std::string& file = cl.file;
  std::error_code ec;
  const uintmax_t size = std::filesystem::file_size(file, ec);
  if (ec)
    return Fail(absl::InvalidArgumentError(absl::StrCat("cannot read ", file, ": ", ec.message())));
  if (size == 0) return Fail(absl::InvalidArgumentError(absl::StrCat(file, " is empty")));
  const uint64_t gib = (size + (1ull << 30) - 1) >> 30;
  json created;
  if (int rc = Ec2(endpoint, "CreateVolume",
                   {{"Size", absl::StrCat(gib)}, {"AvailabilityZone", endpoint.region + "a"}},
                   &created, "");
      rc != 0)
    return rc;
  const std::string volume = created.value("volumeId", "");
  const std::string group = "i-" + volume.substr(4);
  auto cleanup = [&](int rc) {
    (void)CallEc2(endpoint, "DetachVolume", {{"VolumeId", volume}});
    (void)CallEc2(endpoint, "DeleteVolume", {{"VolumeId", volume}});
    return rc;
  };
  if (int rc =
          Ec2(endpoint, "AttachVolume",
              {{"VolumeId", volume}, {"InstanceId", group}, {"Device", "/dev/sda1"}}, nullptr, "");
      rc != 0)
    return cleanup(rc);
  {
    const std::string socket = cl.nbd_socket.empty() ? cl.data_dir + "/nbd.sock" : cl.nbd_socket;
    absl::StatusOr<std::unique_ptr<NbdClient>> nbd = NbdClient::Connect(socket, volume);
    if (!nbd.ok()) return cleanup(Fail(nbd.status()));
    std::ifstream in(file, std::ios::binary);
    std::vector<char> buf(1 << 20);
    for (uint64_t offset = 0; offset < size; offset += buf.size()) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), size - offset));
      std::fill(buf.begin(), buf.end(), 0);
      in.read(buf.data(), static_cast<std::streamsize>(n));
      if (!in) return cleanup(Fail(absl::DataLossError(absl::StrCat("reading ", file, " failed"))));
      const size_t padded = (n + 511) / 512 * 512;  // NBD's minimum block: pad the tail.
      for (size_t piece = 0; piece < padded; piece += 64 << 10) {
        const size_t len = std::min<size_t>(64 << 10, padded - piece);
        const std::span<const char> data(buf.data() + piece, len);
        if (std::all_of(data.begin(), data.end(), [](char c) { return c == 0; })) continue;
        if (absl::Status s = (*nbd)->Write(offset + piece, data); !s.ok()) return cleanup(Fail(s));
      }
    }
    if (absl::Status s = (*nbd)->Flush(); !s.ok()) return cleanup(Fail(s));
  }
  if (int rc = Ec2(endpoint, "DetachVolume", {{"VolumeId", volume}}, nullptr, ""); rc != 0)
    return cleanup(rc);
  json snapshot;
  if (int rc = Ec2(endpoint, "CreateSnapshot",
                   {{"VolumeId", volume}, {"Description", "strata import-image " + name}},
                   &snapshot, "");
      rc != 0)
    return cleanup(rc);
  const std::string snap = snapshot.value("snapshotId", "");
  absl::StatusOr<std::string> state = WaitForSnapshot(endpoint, snap);
  if (!state.ok() || *state != "completed") {
    (void)CallEc2(endpoint, "DeleteSnapshot", {{"SnapshotId", snap}});
    return cleanup(Fail(state.ok() ? absl::InternalError("the snapshot failed") : state.status()));
  }
  std::map<std::string, std::string> params = {
      {"Name", name},
      {"RootDeviceName", "/dev/sda1"},
      {"Architecture", cl.architecture},
      {"VirtualizationType", "hvm"},
      {"BlockDeviceMapping.1.DeviceName", "/dev/sda1"},
      {"BlockDeviceMapping.1.Ebs.SnapshotId", snap},
      {"BlockDeviceMapping.1.Ebs.DeleteOnTermination", "true"}};
  if (!cl.description.empty()) params["Description"] = cl.description;
  if (!cl.boot_mode.empty()) params["BootMode"] = cl.boot_mode;
  json image;
  if (int rc = Ec2(endpoint, "RegisterImage", params, &image, ""); rc != 0) {
    (void)CallEc2(endpoint, "DeleteSnapshot", {{"SnapshotId", snap}});
    return cleanup(rc);
  }
  cleanup(0);
  PrintResult(
      json({{"ImageId", image.value("imageId", "")}, {"SnapshotId", snap}, {"Name", name}}).dump(2),
      cl.output);
  return 0;
}

// The endpoint and credentials for API calls, or exits with a clear error.
absl::StatusOr<ApiEndpoint> Endpoint(const CommandLine& cl) {
  if (cl.output != "json" && cl.output != "text" && cl.output != "table") {
    return absl::InvalidArgumentError("--output is json, text or table");
  }
  return LoadEndpoint(cl.data_dir, cl.endpoint, cl.region);
}

void PrintCopyRecord(const CopyRecord& r) {
  const double seconds = r.end_micros > r.start_micros ? (r.end_micros - r.start_micros) / 1e6 : 0;
  std::printf("snapshot        %s (%s)\n", r.snapshot_id.c_str(), r.destination_region.c_str());
  std::printf("source          %s (%s)\n", r.source_snapshot_id.c_str(), r.source_region.c_str());
  std::printf("base            %s\n",
              r.base_source_snapshot.empty()
                  ? "none: a full copy"
                  : absl::StrCat(r.base_snapshot_id, " (the copy of ", r.base_source_snapshot, ")")
                        .c_str());
  std::printf("state           %s%s%s\n", r.state.c_str(), r.message.empty() ? "" : ": ",
              r.message.c_str());
  std::printf("logical bytes   %llu\n", (unsigned long long)r.logical_bytes);
  std::printf("chunks          %llu of %llu sent, %llu skipped (already at the destination)\n",
              (unsigned long long)r.chunks_done, (unsigned long long)r.chunks_total,
              (unsigned long long)r.chunks_skipped);
  std::printf("changed bytes   %llu\n", (unsigned long long)r.changed_bytes);
  std::printf("bytes sent      %llu%s\n", (unsigned long long)r.bytes_sent,
              r.changed_bytes > 0
                  ? absl::StrFormat(" (%.3f of the changed bytes)",
                                    static_cast<double>(r.bytes_sent) / r.changed_bytes)
                        .c_str()
                  : "");
  std::printf("retries         %llu\n", (unsigned long long)r.retries);
  const double on_link = r.transfer_micros / 1e6;
  std::printf("time            %.3f s (%.3f s on the link, the rest storing the copy)\n", seconds,
              on_link);
  std::printf("throughput      %.2f MB/s sent on the link, %.2f MB/s of changed data overall\n",
              on_link > 0 ? r.bytes_sent / on_link / 1e6 : 0,
              seconds > 0 ? r.changed_bytes / seconds / 1e6 : 0);
  std::printf("link            %s%s\n", r.link.c_str(),
              r.completion_minutes > 0
                  ? absl::StrCat(" (CompletionDurationMinutes ", r.completion_minutes, ")").c_str()
                  : "");
}

// A copy's record from DescribeSnapshotCopies (EC2's XML as JSON: every value a string).
CopyRecord CopyRecordOf(const json& item) {
  auto text = [&](const char* key) { return item.value(key, std::string()); };
  auto number = [&](const char* key) {
    uint64_t v = 0;
    return absl::SimpleAtoi(text(key), &v) ? v : 0;
  };
  CopyRecord r;
  r.snapshot_id = text("snapshotId");
  r.destination_region = text("destinationRegion");
  r.source_snapshot_id = text("sourceSnapshotId");
  r.source_region = text("sourceRegion");
  r.base_source_snapshot = text("baseSourceSnapshotId");
  r.base_snapshot_id = text("baseSnapshotId");
  r.state = text("state");
  r.message = text("message");
  r.logical_bytes = number("logicalBytes");
  r.chunks_total = number("chunksTotal");
  r.chunks_done = number("chunksDone");
  r.chunks_skipped = number("chunksSkipped");
  r.changed_bytes = number("changedBytes");
  r.bytes_sent = number("bytesSent");
  r.retries = number("retries");
  r.start_micros = number("startMicros");
  r.end_micros = number("endMicros");
  r.transfer_micros = number("transferMicros");
  r.completion_minutes = static_cast<uint32_t>(number("completionMinutes"));
  r.link = text("link");
  return r;
}

int CopyStats(const CommandLine& cl, const ApiEndpoint& endpoint) {
  std::map<std::string, std::string> params;
  if (!cl.snapshot_id.empty()) params["SnapshotId.1"] = cl.snapshot_id;
  json out;
  if (int rc = Ec2(endpoint, "DescribeSnapshotCopies", params, &out, ""); rc != 0) return rc;
  if (cl.json) {
    std::printf("%s\n", out.dump(2).c_str());
    return 0;
  }
  bool first = true;
  for (const json& item : AsList(out["copySet"])) {
    if (!first) std::printf("\n");
    PrintCopyRecord(CopyRecordOf(item));
    first = false;
  }
  return 0;
}

// Adds a leaf subcommand whose action calls the API.
CLI::App* ApiCommand(CLI::App& parent, const char* name, const char* help, const CommandLine& cl,
                     Run& run, std::function<int(const ApiEndpoint&)> body) {
  CLI::App* sub = parent.add_subcommand(name, help);
  sub->callback([&cl, &run, body = std::move(body)] {
    run = [&cl, body] {
      absl::StatusOr<ApiEndpoint> endpoint = Endpoint(cl);
      return endpoint.ok() ? body(*endpoint) : Fail(endpoint.status());
    };
  });
  return sub;
}

// What holds the store's catalogs and chunks, when --data-dir is the served store's directory.
std::string BackendOf(const std::string& data_dir) {
  absl::StatusOr<std::string> backend = strata::DescribeStoreBackend(data_dir);
  return backend.ok() ? *backend
                      : absl::StrCat("unknown (", backend.status().message(), "; give --data-dir)");
}

// A volume's export on stratad's unix socket (DIR/nbd.sock), which serves stratad's own user
// every export.
std::string UnixNbdUri(const CommandLine& cl, const std::string& volume) {
  return "nbd+unix:///" + volume +
         "?socket=" + std::filesystem::absolute(cl.data_dir).lexically_normal().string() +
         "/nbd.sock";
}

int Status(const CommandLine& cl, const ApiEndpoint& endpoint) {
  json volumes, snapshots;
  if (int rc = Ec2(endpoint, "DescribeVolumes", {}, &volumes, ""); rc != 0) return rc;
  if (int rc = Ec2(endpoint, "DescribeSnapshots", {{"Owner.1", "self"}}, &snapshots, ""); rc != 0)
    return rc;
  json exports = json::array();
  for (const json& v : AsList(volumes["volumeSet"])) {
    if (v.value("status", "") == "in-use")
      exports.push_back(UnixNbdUri(cl, v.value("volumeId", "")));
  }
  json status = {{"Endpoint", endpoint.url},
                 {"Region", endpoint.region},
                 {"Backend", BackendOf(cl.data_dir)},
                 {"Volumes", AsList(volumes["volumeSet"]).size()},
                 {"Snapshots", AsList(snapshots["snapshotSet"]).size()},
                 {"NbdExports", exports}};
  PrintResult(status.dump(2), cl.output);
  return 0;
}

// The first /dev/sdX that attachment group `instance` does not use, or "" on an API error
// (printed; *rc set).
std::string FreeDevice(const ApiEndpoint& endpoint, const std::string& instance, int* rc) {
  json attached;
  *rc = Ec2(endpoint, "DescribeVolumes",
            {{"Filter.1.Name", "attachment.instance-id"}, {"Filter.1.Value.1", instance}},
            &attached, "");
  if (*rc != 0) return "";
  std::set<std::string> used;
  for (const json& v : AsList(attached["volumeSet"])) {
    for (const json& at : AsList(v["attachmentSet"])) used.insert(at.value("device", ""));
  }
  for (char c = 'f'; c <= 'z'; ++c) {
    if (!used.contains(std::string("/dev/sd") + c)) return std::string("/dev/sd") + c;
  }
  return "";
}

int Attach(const CommandLine& cl, const ApiEndpoint& endpoint) {
  const std::string& volume = cl.volume_id;
  const std::string instance = cl.instance_id.empty() ? "i-00000000000000001" : cl.instance_id;
  std::string device = cl.device;
  if (device.empty()) {
    int rc = 0;
    device = FreeDevice(endpoint, instance, &rc);
    if (rc != 0) return rc;
  }
  json attachment;
  if (int rc = Ec2(endpoint, "AttachVolume",
                   {{"VolumeId", volume}, {"InstanceId", instance}, {"Device", device}},
                   &attachment, "");
      rc != 0) {
    return rc;
  }
  const std::string& nbd = cl.nbd;
  const std::string host = nbd.substr(0, nbd.rfind(':'));
  const std::string port = nbd.substr(nbd.rfind(':') + 1);
  // The unix socket serves stratad's own user every export; over TCP an account connects with
  // TLS, its access key id the PSK identity (stratad --nbd-auth account, the default).
  const std::string unix_uri = UnixNbdUri(cl, volume);
  const std::string tls_uri =
      "nbds://" + endpoint.access_key_id + "@" + nbd + "/" + volume + "?tls-psk-file=my.psk";
  json out = {
      {"Attachment", attachment},
      {"NbdUri", unix_uri},
      {"NbdTlsUri", tls_uri},
      {"Use",
       {"nbdinfo '" + unix_uri + "'   # as stratad's user",
        "strata nbd-key --psk-file my.psk && nbdinfo '" + tls_uri + "'   # any user, over TLS",
        "qemu-system-x86_64 ... -object tls-creds-psk,id=tls0,endpoint=client,dir=DIR,username=" +
            endpoint.access_key_id + " -drive driver=nbd,host=" + host + ",port=" + port +
            ",export=" + volume + ",tls-creds=tls0,if=virtio   # DIR/keys.psk from strata nbd-key",
        "nbd-client " + host + " " + port + " /dev/nbd0 -N " + volume +
            "   # stratad --nbd-auth none only; needs the nbd kernel module"}}};
  PrintResult(out.dump(2), cl.output);
  return 0;
}

int Console(const CommandLine& cl, const ApiEndpoint& endpoint) {
  json out;
  if (int rc = Ec2(endpoint, "GetConsoleOutput", {{"InstanceId", cl.instance}}, &out, ""); rc != 0)
    return rc;
  std::string text;
  absl::Base64Unescape(out.value("output", ""), &text);
  std::fwrite(text.data(), 1, text.size(), stdout);
  return 0;
}

int Instances(const CommandLine& cl, const ApiEndpoint& endpoint) {
  json described;
  if (int rc = Ec2(endpoint, "DescribeInstances", {}, &described, ""); rc != 0) return rc;
  json out = json::array();
  for (const json& r : AsList(described["reservationSet"])) {
    for (const json& i : AsList(r["instancesSet"])) {
      json volumes = json::array();
      for (const json& m : AsList(i["blockDeviceMapping"])) {
        volumes.push_back({{"Device", m.value("deviceName", "")},
                           {"VolumeId", m["ebs"].value("volumeId", "")},
                           {"NbdUri", m["ebs"].value("strataNbdUri", "")}});
      }
      out.push_back({{"InstanceId", i.value("instanceId", "")},
                     {"ImageId", i.value("imageId", "")},
                     {"State", i["instanceState"].value("name", "")},
                     {"Type", i.value("instanceType", "")},
                     {"Reason", i.value("reason", "")},
                     {"Volumes", volumes}});
    }
  }
  PrintResult(out.dump(2), cl.output);
  return 0;
}

int AnyEc2Call(const CommandLine& cl, const ApiEndpoint& endpoint) {
  std::map<std::string, std::string> params;
  for (const std::string& p : cl.params) {
    const size_t eq = p.find('=');
    if (eq == std::string::npos || eq == 0) {
      return Fail(
          absl::InvalidArgumentError(absl::StrCat("parameter \"", p, "\" is not Name=Value")));
    }
    params[p.substr(0, eq)] = p.substr(eq + 1);
  }
  return Ec2(endpoint, cl.action, params, nullptr, cl.output);
}

std::string EndpointUrl(const CommandLine& cl) {
  return cl.endpoint.empty() ? "http://127.0.0.1:8150" : cl.endpoint;
}

// Prints shell exports for the aws CLI and SDKs: the credentials stratad wrote on first start.
int PrintEnv(const CommandLine& cl) {
  const std::string credentials = cl.data_dir + "/credentials";
  std::ifstream in(credentials);
  if (!in) {
    std::fprintf(stderr,
                 "strata: %s is missing: start stratad once on %s (scripts/run.sh) to create it\n",
                 credentials.c_str(), cl.data_dir.c_str());
    return 1;
  }
  const std::string abs = std::filesystem::absolute(cl.data_dir).lexically_normal().string();
  const std::string url = EndpointUrl(cl);
  std::printf("export AWS_SHARED_CREDENTIALS_FILE=%s/credentials\n", abs.c_str());
  std::printf("export AWS_CONFIG_FILE=%s/config\n", abs.c_str());
  std::printf("export AWS_ENDPOINT_URL=%s\n", url.c_str());
  std::printf("# aws --endpoint-url %s ec2 describe-volumes\n", url.c_str());
  return 0;
}

int Init(const CommandLine& cl) {
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(cl.data_dir, {});
  if (!store.ok()) return Fail(store.status());
  absl::StatusOr<bool> created = EnsureAdmin(**store, cl.data_dir);
  if (!created.ok()) return Fail(created.status());
  store->reset();
  std::fprintf(stderr, "strata: store in %s %s; start it with: build/bin/stratad --data-dir %s\n",
               cl.data_dir.c_str(), *created ? "created with an admin account" : "already set up",
               cl.data_dir.c_str());
  return PrintEnv(cl);
}

// Prints (or writes to --psk-file, created 0600) the caller's NBD TLS key as psktool's
// IDENTITY:HEXKEY line: the identity is the access key id, the key derived from the secret.
int NbdKey(const CommandLine& cl, const ApiEndpoint& endpoint) {
  std::string key = strata::DeriveNbdKey(endpoint.secret_access_key);
  const std::string line =
      absl::StrCat(endpoint.access_key_id, ":", absl::BytesToHexString(key), "\n");
  if (cl.file.empty()) {
    std::fputs(line.c_str(), stdout);
    return 0;
  }
  const int fd = ::open(cl.file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0 || ::fchmod(fd, 0600) != 0 ||
      ::write(fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
    const int error = errno;
    if (fd >= 0) ::close(fd);
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("cannot write ", cl.file, ": ", std::strerror(error))));
  }
  ::close(fd);
  return 0;
}

}  // namespace

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "strata: %s\n", std::string(s.message()).c_str());
  return s.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

int VolumeStats(const CommandLine& cl) {
  absl::StatusOr<ApiEndpoint> endpoint = Endpoint(cl);
  if (!endpoint.ok()) return Fail(endpoint.status());
  json described;
  if (int rc = Ec2(*endpoint, "DescribeVolumes", {{"VolumeId.1", cl.volume_id}}, &described, "");
      rc != 0) {
    return rc;
  }
  const json volume =
      AsList(described["volumeSet"]).empty() ? json::object() : AsList(described["volumeSet"])[0];
  const std::string type = volume.value("volumeType", "");
  // The last whole seconds (each is sampled as it ends), one CloudWatch query per metric.
  static const std::vector<std::pair<const char*, const char*>> kMetrics = {
      {"VolumeReadOps", "Sum"},         {"VolumeWriteOps", "Sum"},
      {"VolumeReadBytes", "Sum"},       {"VolumeWriteBytes", "Sum"},
      {"VolumeTotalReadTime", "Sum"},   {"VolumeTotalWriteTime", "Sum"},
      {"VolumeQueueLength", "Average"}, {"VolumeIdleTime", "Sum"},
      {"BurstBalance", "Average"}};
  const int64_t now = ::time(nullptr);
  json queries = json::array();
  for (size_t i = 0; i < kMetrics.size(); ++i) {
    queries.push_back(
        {{"Id", absl::StrCat("m", i)},
         {"MetricStat",
          {{"Metric",
            {{"Namespace", "AWS/EBS"},
             {"MetricName", kMetrics[i].first},
             {"Dimensions", json::array({{{"Name", "VolumeId"}, {"Value", cl.volume_id}}})}}},
           {"Period", 1},
           {"Stat", kMetrics[i].second}}}});
  }
  const json request = {{"MetricDataQueries", queries},
                        {"StartTime", now - cl.seconds - 1},
                        {"EndTime", now},
                        {"ScanBy", "TimestampAscending"}};
  absl::StatusOr<ApiResult> result = CallCloudWatch(*endpoint, "GetMetricData", request.dump());
  if (!result.ok()) return Fail(result.status());
  if (!result->error_code.empty()) {
    std::fprintf(stderr,
                 "strata: An error occurred (%s) when calling the GetMetricData operation: %s\n",
                 result->error_code.c_str(), result->error_message.c_str());
    return 254;
  }
  const json data = json::parse(result->json, nullptr, false);
  std::map<int64_t, json> rows;  // By second.
  for (const json& r : AsList(data.value("MetricDataResults", json()))) {
    const json times = AsList(r.value("Timestamps", json())),
               values = AsList(r.value("Values", json()));
    for (size_t i = 0; i < times.size() && i < values.size(); ++i) {
      json& row = rows[times[i].get<int64_t>()];
      row[r.value("Label", "")] = values[i];
    }
  }
  while (rows.size() > static_cast<size_t>(cl.seconds)) rows.erase(rows.begin());
  json seconds = json::array();
  for (auto& [second, row] : rows) {
    char when[32];
    const time_t t = second;
    tm utc{};
    gmtime_r(&t, &utc);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &utc);
    json out = {{"Time", when}};
    for (const auto& [name, stat] : kMetrics) {
      if (row.contains(name) && row[name].is_number()) {
        out[name] = std::round(row[name].get<double>() * 1000) / 1000;  // Enough to read.
      }
    }
    seconds.push_back(out);
  }
  json stats = {{"VolumeId", cl.volume_id},
                {"VolumeType", type},
                {"Iops", volume.value("iops", "")},
                {"Throughput", volume.value("throughput", "")},
                {"Seconds", seconds}};
  PrintResult(stats.dump(2), cl.output);
  return 0;
}

int CreateAccountThroughApi(const CommandLine& cl, const std::string& name) {
  absl::StatusOr<ApiEndpoint> endpoint = LoadEndpoint(cl.data_dir, cl.endpoint, cl.region);
  if (!endpoint.ok()) return Fail(endpoint.status());
  json created;
  if (int rc = Ec2(*endpoint, "CreateAccount", {{"AccountName", name}}, &created, ""); rc != 0) {
    return rc;
  }
  std::printf("%s\n", json({{"AccountId", created.value("accountId", "")},
                            {"Name", created.value("accountName", "")},
                            {"AccessKeyId", created.value("accessKeyId", "")},
                            {"SecretAccessKey", created.value("secretAccessKey", "")}})
                          .dump()
                          .c_str());
  return 0;
}

void AddApiCommands(CLI::App& app, CommandLine& cl, Run& run) {
  app.add_subcommand("init", "create the store and its admin credentials; print env")
      ->callback([&cl, &run] { run = [&cl] { return Init(cl); }; });
  app.add_subcommand("env", "print the variables for the aws CLI and SDKs")->callback([&cl, &run] {
    run = [&cl] { return PrintEnv(cl); };
  });
  ApiCommand(app, "status", "what stratad serves: volumes, snapshots, NBD exports", cl, run,
             [&cl](const ApiEndpoint& e) { return Status(cl, e); });
  CLI::App* attach = ApiCommand(app, "attach", "export a volume over NBD; prints how to use it", cl,
                                run, [&cl](const ApiEndpoint& e) { return Attach(cl, e); });
  attach->add_option("VOL", cl.volume_id, "volume id")->required();
  attach
      ->add_option("--instance-id", cl.instance_id,
                   "the attachment group (default i-00000000000000001)")
      ->option_text("i-...");
  attach->add_option("--device", cl.device, "the device name (default: the first free /dev/sdX)")
      ->option_text("/dev/sdX");
  ApiCommand(app, "detach", "end a volume's export (flushes first)", cl, run,
             [&cl](const ApiEndpoint& e) {
               return Ec2(e, "DetachVolume", {{"VolumeId", cl.volume_id}}, nullptr, cl.output);
             })
      ->add_option("VOL", cl.volume_id, "volume id")
      ->required();
  CLI::App* import = ApiCommand(
      app, "import-image",
      "a raw disk image becomes a volume, a snapshot and a registered AMI (prints its ImageId)", cl,
      run, [&cl](const ApiEndpoint& e) { return ImportImage(cl, e); });
  import->add_option("FILE", cl.file, "the raw disk image")->required();
  import->add_option("--name", cl.name, "the image's name")->required();
  import->add_option("--description", cl.description, "the image's description")
      ->option_text("TEXT");
  import->add_option("--architecture", cl.architecture, "x86_64 or arm64")
      ->check(CLI::IsMember({"x86_64", "arm64"}))
      ->capture_default_str();
  import->add_option("--boot-mode", cl.boot_mode, "legacy-bios or uefi")
      ->check(CLI::IsMember({"legacy-bios", "uefi"}));
  import->add_option("--nbd-socket", cl.nbd_socket, "stratad's NBD socket (default DIR/nbd.sock)")
      ->option_text("PATH");
  ApiCommand(app, "nbd-key",
             "your NBD TLS pre-shared key, IDENTITY:HEXKEY (psktool's format: qemu's "
             "tls-creds-psk keys.psk, libnbd's tls-psk-file); the identity is your access key id",
             cl, run, [&cl](const ApiEndpoint& e) { return NbdKey(cl, e); })
      ->add_option("--psk-file", cl.file, "write it to FILE (mode 0600) instead of printing it")
      ->option_text("FILE");
  ApiCommand(app, "instances", "your instances: state, volumes, NBD exports", cl, run,
             [&cl](const ApiEndpoint& e) { return Instances(cl, e); });
  ApiCommand(app, "console", "an instance's serial console output", cl, run,
             [&cl](const ApiEndpoint& e) { return Console(cl, e); })
      ->add_option("INSTANCE", cl.instance, "instance id")
      ->required();
  CLI::App* ec2 =
      ApiCommand(app, "ec2",
                 "any EC2 call of docs/api.md, e.g. ec2 DescribeVolumes Filter.1.Name=tag:Name "
                 "Filter.1.Value.1=web",
                 cl, run, [&cl](const ApiEndpoint& e) { return AnyEc2Call(cl, e); });
  ec2->add_option("ACTION", cl.action, "the EC2 action, e.g. DescribeVolumes")->required();
  ec2->add_option("PARAMS", cl.params, "the call's parameters")->option_text("Name=Value ...");
  CLI::App* copy_stats =
      ApiCommand(app, "copy-stats",
                 "your cross-region copies into the regions stratad serves: bytes sent, chunks "
                 "skipped, retries, time, throughput (DescribeSnapshotCopies)",
                 cl, run, [&cl](const ApiEndpoint& e) { return CopyStats(cl, e); });
  copy_stats->add_option("SNAP", cl.snapshot_id, "the copy's snapshot id, or its source's");
  copy_stats->add_flag("--json", cl.json, "print the records as the API returns them");
}

void AddVolumeApiCommands(CLI::App& volume, CommandLine& cl, Run& run) {
  CLI::App* takeover = ApiCommand(
      volume, "takeover",
      "through stratad's API: this node serves a volume whose head is in RADOS from now on "
      "(docs/ceph.md)",
      cl, run, [&cl](const ApiEndpoint& e) {
        return Ec2(e, "TakeOverVolume",
                   {{"VolumeId", cl.volume_id}, {"Force", cl.force ? "true" : "false"}}, nullptr,
                   cl.output);
      });
  takeover->add_option("VOL", cl.volume_id, "volume id")->required();
  takeover->add_flag("--force", cl.force,
                     "take it from a node that still holds its lock (a dead or hung node): that "
                     "node is blocklisted in the Ceph cluster, so its late writes are refused");
}

}  // namespace strata::tools
