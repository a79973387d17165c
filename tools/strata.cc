// strata: the command-line client. Until the control-plane API lands it works on a store
// directory directly (stratad must not be running on it): volumes, snapshots, changed blocks,
// data import and export, garbage collection.

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "admin.h"
#include "api_client.h"
#include "cli_args.h"
#include "nbd_client.h"
#include "nlohmann/json.hpp"
#include "strata/store.h"
#include "strata/transfer.h"

namespace {

using strata::tools::Args;

constexpr char kUsage[] = R"(usage: strata [--data-dir DIR] [--region NAME] COMMAND ...
Through stratad's API (stratad running; signed with DIR/credentials or AWS_* variables):
  init                                     create the store and its admin credentials, print env
  env [--endpoint URL]                     print the variables for the aws CLI and SDKs
  status                                   what stratad serves: volumes, snapshots, exports
  attach VOL [--instance-id i-...] [--device /dev/sdX]
                                           export VOL over NBD; prints how to use it
  detach VOL                               end the export (flushes first)
  import-image FILE --name NAME [--description TEXT] [--architecture x86_64|arm64]
               [--boot-mode legacy-bios|uefi] [--nbd-socket PATH]
                                           a raw disk image becomes a volume, a snapshot and
                                           a registered AMI (prints its ImageId)
  instances                                your instances: state, volumes, NBD exports
  copy-stats [SNAP]                        cross-region copies into this store: bytes sent,
                                           chunks skipped, retries, time, throughput (SNAP:
                                           the copy's snapshot id; works with stratad running)
  console INSTANCE                         the instance's serial console output
  ec2 ACTION [Name=Value ...]              any EC2 call of docs/api.md, e.g.
                                           ec2 DescribeVolumes Filter.1.Name=tag:Name Filter.1.Value.1=web
  Options: --endpoint URL (default http://127.0.0.1:8150), --output json|text|table,
  --nbd HOST:PORT (for printed lines, default 127.0.0.1:10809). API errors exit 254 with
  the AWS error code on stderr.
On the store directly (stratad stopped):
  volume create --size SIZE [--snapshot SNAP] [--tag K=V]...
  volume list | describe VOL | delete VOL | grow VOL --size SIZE
  volume import VOL FILE [--offset N]      write FILE's bytes into VOL
  volume export VOL FILE                   write VOL's bytes to FILE
  volume hydrate VOL [--rate BYTES/S]      copy the base snapshot into the volume
  snapshot create VOL [--description TEXT] (waits until it completes)
  snapshot list | describe SNAP | delete SNAP
  snapshot export SNAP FILE
  snapshot blocks SNAP                     list non-zero 512 KiB blocks
  snapshot changed SNAP1 SNAP2             list blocks that differ
  region list | create NAME
  account create NAME | account list       (prints access keys; while stratad runs, create
                                           goes through its API as the admin account)
  gc                                       reclaim space of deleted snapshots
  stats
Sizes take K, M, G, T suffixes (powers of 1024). DIR defaults to ./data.
)";

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "strata: %s\n", std::string(s.message()).c_str());
  return s.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

void PrintCopyRecord(const strata::CopyRecord& r) {
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

int CopyStats(const Args& args, const std::string& dir) {
  absl::StatusOr<std::vector<strata::CopyRecord>> records = strata::ReadCopyRecords(dir);
  if (!records.ok()) return Fail(records.status());
  const std::string wanted = args.positional().size() > 1 ? args.positional()[1] : "";
  bool found = false;
  for (const strata::CopyRecord& r : *records) {
    if (!wanted.empty() && r.snapshot_id != wanted && r.source_snapshot_id != wanted) continue;
    if (found) std::printf("\n");
    PrintCopyRecord(r);
    found = true;
  }
  if (!found && !wanted.empty()) {
    return Fail(
        absl::NotFoundError(absl::StrCat("no cross-region copy of or into ", wanted, " in ", dir)));
  }
  return 0;
}

void PrintVolume(const strata::VolumeInfo& v) {
  std::printf("%s\tsize=%llu\tsnapshot=%s\thydrated=%d%%%s", v.id.c_str(),
              (unsigned long long)v.size_bytes, v.snapshot_id.empty() ? "-" : v.snapshot_id.c_str(),
              v.hydration_percent, v.hydrating ? " (hydrating)" : "");
  for (const auto& [k, val] : v.tags) std::printf("\t%s=%s", k.c_str(), val.c_str());
  std::printf("\n");
}

void PrintSnapshot(const strata::SnapshotInfo& s) {
  std::printf("%s\tvolume=%s\tparent=%s\tstate=%s\tprogress=%d%%\tsize=%llu\tincremental=%llu",
              s.id.c_str(), s.volume_id.c_str(), s.parent_id.empty() ? "-" : s.parent_id.c_str(),
              strata::SnapshotStateName(s.state), s.progress_percent,
              (unsigned long long)s.volume_size_bytes, (unsigned long long)s.incremental_bytes);
  if (!s.description.empty()) std::printf("\tdescription=%s", s.description.c_str());
  if (!s.state_message.empty()) std::printf("\tmessage=%s", s.state_message.c_str());
  std::printf("\n");
}

absl::Status Need(const Args& a, size_t n, const char* what) {
  if (a.positional().size() != n) return absl::InvalidArgumentError(absl::StrCat("usage: ", what));
  return absl::OkStatus();
}

absl::StatusOr<std::map<std::string, std::string>> Tags(const std::vector<std::string>& specs) {
  std::map<std::string, std::string> tags;
  for (const std::string& spec : specs) {
    std::vector<std::string> kv = absl::StrSplit(spec, absl::MaxSplits('=', 1));
    if (kv.size() != 2 || kv[0].empty()) return absl::InvalidArgumentError("--tag takes KEY=VALUE");
    tags[kv[0]] = kv[1];
  }
  return tags;
}

// Copies a source of `size` bytes to a file in 1 MiB pieces.
absl::Status ExportTo(const std::function<absl::Status(uint64_t, std::span<std::byte>)>& read,
                      uint64_t size, const std::string& path) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::InvalidArgumentError(absl::StrCat("cannot write ", path));
  std::vector<std::byte> buf(1 << 20);
  for (uint64_t off = 0; off < size; off += buf.size()) {
    auto piece = std::span(buf).first(std::min<uint64_t>(buf.size(), size - off));
    if (absl::Status s = read(off, piece); !s.ok()) return s;
    out.write(reinterpret_cast<const char*>(piece.data()),
              static_cast<std::streamsize>(piece.size()));
  }
  out.close();
  if (!out) return absl::DataLossError(absl::StrCat("writing ", path, " failed"));
  return absl::OkStatus();
}

absl::Status VolumeCommand(strata::Region& region, const Args& a,
                           const std::vector<std::string>& tags) {
  const auto& p = a.positional();
  const std::string verb = p.size() > 1 ? p[1] : "";
  if (verb == "create") {
    if (p.size() != 2) return absl::InvalidArgumentError("usage: volume create --size SIZE");
    auto size = a.GetSize("size", 0);
    if (!size.ok()) return size.status();
    auto t = Tags(tags);
    if (!t.ok()) return t.status();
    auto info = region.CreateVolume({*size, a.Get("snapshot"), *t});
    if (!info.ok()) return info.status();
    PrintVolume(*info);
    return absl::OkStatus();
  }
  if (verb == "list") {
    auto all = region.ListVolumes();
    if (!all.ok()) return all.status();
    for (const auto& v : *all) PrintVolume(v);
    return absl::OkStatus();
  }
  if (verb == "describe" || verb == "delete") {
    if (absl::Status s = Need(a, 3, "volume describe|delete VOL"); !s.ok()) return s;
    if (verb == "delete") return region.DeleteVolume(p[2]);
    auto info = region.DescribeVolume(p[2]);
    if (!info.ok()) return info.status();
    PrintVolume(*info);
    return absl::OkStatus();
  }
  if (verb == "grow") {
    if (absl::Status s = Need(a, 3, "volume grow VOL --size SIZE"); !s.ok()) return s;
    auto size = a.GetSize("size", 0);
    if (!size.ok()) return size.status();
    return region.GrowVolume(p[2], *size);
  }
  if (verb == "hydrate") {
    if (absl::Status s = Need(a, 3, "volume hydrate VOL [--rate BYTES/S]"); !s.ok()) return s;
    auto rate = a.GetSize("rate", 0);
    if (!rate.ok()) return rate.status();
    if (absl::Status s = region.StartHydration(p[2], *rate); !s.ok()) return s;
    return region.RunBackgroundWork();
  }
  if (verb == "import") {
    if (absl::Status s = Need(a, 4, "volume import VOL FILE [--offset N]"); !s.ok()) return s;
    auto volume = region.GetVolume(p[2]);
    if (!volume.ok()) return volume.status();
    auto offset = a.GetSize("offset", 0);
    if (!offset.ok()) return offset.status();
    std::ifstream in(p[3], std::ios::binary);
    if (!in) return absl::InvalidArgumentError(absl::StrCat("cannot read ", p[3]));
    std::vector<std::byte> buf(1 << 20);
    uint64_t pos = *offset;
    while (in) {
      in.read(reinterpret_cast<char*>(buf.data()), static_cast<std::streamsize>(buf.size()));
      size_t n = static_cast<size_t>(in.gcount());
      if (n == 0) break;
      // Pad a short tail to a whole sector with zeros.
      const size_t padded =
          (n + strata::kSectorBytes - 1) / strata::kSectorBytes * strata::kSectorBytes;
      std::fill(buf.begin() + n, buf.begin() + padded, std::byte{0});
      if (absl::Status s = (*volume)->Write(pos, std::span(buf).first(padded)); !s.ok()) return s;
      pos += padded;
    }
    return (*volume)->Flush();
  }
  if (verb == "export") {
    if (absl::Status s = Need(a, 4, "volume export VOL FILE"); !s.ok()) return s;
    auto volume = region.GetVolume(p[2]);
    if (!volume.ok()) return volume.status();
    return ExportTo(
        [&](uint64_t off, std::span<std::byte> out) { return (*volume)->Read(off, out); },
        (*volume)->size_bytes(), p[3]);
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown volume command \"", verb, "\""));
}

absl::Status PrintBlocks(
    const std::function<absl::StatusOr<strata::BlockListing>(const std::string&)>& page) {
  std::string token;
  uint64_t count = 0;
  do {
    auto listing = page(token);
    if (!listing.ok()) return listing.status();
    for (const auto& b : listing->blocks) {
      std::printf("%llu\t%s\t%s\n", (unsigned long long)b.block_index,
                  b.first_token.empty() ? "-" : b.first_token.c_str(),
                  b.second_token.empty() ? "-" : b.second_token.c_str());
      ++count;
    }
    token = listing->next_token;
  } while (!token.empty());
  std::printf("%llu blocks of %llu bytes\n", (unsigned long long)count,
              (unsigned long long)strata::kApiBlockBytes);
  return absl::OkStatus();
}

absl::Status SnapshotCommand(strata::Region& region, const Args& a) {
  const auto& p = a.positional();
  const std::string verb = p.size() > 1 ? p[1] : "";
  if (verb == "create") {
    if (absl::Status s = Need(a, 3, "snapshot create VOL [--description TEXT]"); !s.ok()) return s;
    auto info = region.CreateSnapshot({p[2], a.Get("description"), {}});
    if (!info.ok()) return info.status();
    if (absl::Status s = region.RunBackgroundWork(); !s.ok()) return s;  // Completes it.
    auto done = region.DescribeSnapshot(info->id);
    if (!done.ok()) return done.status();
    PrintSnapshot(*done);
    return absl::OkStatus();
  }
  if (verb == "list") {
    auto all = region.ListSnapshots();
    if (!all.ok()) return all.status();
    for (const auto& s : *all) PrintSnapshot(s);
    return absl::OkStatus();
  }
  if (verb == "describe" || verb == "delete") {
    if (absl::Status s = Need(a, 3, "snapshot describe|delete SNAP"); !s.ok()) return s;
    if (verb == "delete") {
      if (absl::Status s = region.DeleteSnapshot(p[2]); !s.ok()) return s;
      return region.RunBackgroundWork();
    }
    auto info = region.DescribeSnapshot(p[2]);
    if (!info.ok()) return info.status();
    PrintSnapshot(*info);
    return absl::OkStatus();
  }
  if (verb == "export") {
    if (absl::Status s = Need(a, 4, "snapshot export SNAP FILE"); !s.ok()) return s;
    auto snap = region.OpenSnapshot(p[2]);
    if (!snap.ok()) return snap.status();
    return ExportTo([&](uint64_t off, std::span<std::byte> out) { return (*snap)->Read(off, out); },
                    (*snap)->size_bytes(), p[3]);
  }
  if (verb == "blocks") {
    if (absl::Status s = Need(a, 3, "snapshot blocks SNAP"); !s.ok()) return s;
    return PrintBlocks(
        [&](const std::string& t) { return region.ListSnapshotBlocks(p[2], t, 10000); });
  }
  if (verb == "changed") {
    if (absl::Status s = Need(a, 4, "snapshot changed SNAP1 SNAP2"); !s.ok()) return s;
    return PrintBlocks(
        [&](const std::string& t) { return region.ListChangedBlocks(p[2], p[3], t, 10000); });
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown snapshot command \"", verb, "\""));
}

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
int Ec2(const strata::tools::ApiEndpoint& endpoint, const std::string& action,
        const std::map<std::string, std::string>& params, json* out, const std::string& format) {
  absl::StatusOr<strata::tools::ApiResult> result =
      strata::tools::CallEc2(endpoint, action, params);
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
absl::StatusOr<std::string> WaitForSnapshot(const strata::tools::ApiEndpoint& endpoint,
                                            const std::string& snapshot) {
  for (int i = 0; i < 36000; ++i) {
    absl::StatusOr<strata::tools::ApiResult> r =
        strata::tools::CallEc2(endpoint, "DescribeSnapshots", {{"SnapshotId.1", snapshot}});
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
int ImportImage(const Args& a, const strata::tools::ApiEndpoint& endpoint, const std::string& dir,
                const std::string& format) {
  const auto& p = a.positional();
  const std::string name = a.Get("name", "");
  if (p.size() != 2 || name.empty()) {
    return Fail(absl::InvalidArgumentError("usage: import-image FILE --name NAME"));
  }
  const std::string& file = p[1];
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
    (void)strata::tools::CallEc2(endpoint, "DetachVolume", {{"VolumeId", volume}});
    (void)strata::tools::CallEc2(endpoint, "DeleteVolume", {{"VolumeId", volume}});
    return rc;
  };
  if (int rc =
          Ec2(endpoint, "AttachVolume",
              {{"VolumeId", volume}, {"InstanceId", group}, {"Device", "/dev/sda1"}}, nullptr, "");
      rc != 0)
    return cleanup(rc);
  {
    const std::string socket = a.Get("nbd-socket", dir + "/nbd.sock");
    absl::StatusOr<std::unique_ptr<strata::tools::NbdClient>> nbd =
        strata::tools::NbdClient::Connect(socket, volume);
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
    (void)strata::tools::CallEc2(endpoint, "DeleteSnapshot", {{"SnapshotId", snap}});
    return cleanup(Fail(state.ok() ? absl::InternalError("the snapshot failed") : state.status()));
  }
  std::map<std::string, std::string> params = {
      {"Name", name},
      {"RootDeviceName", "/dev/sda1"},
      {"Architecture", a.Get("architecture", "x86_64")},
      {"VirtualizationType", "hvm"},
      {"BlockDeviceMapping.1.DeviceName", "/dev/sda1"},
      {"BlockDeviceMapping.1.Ebs.SnapshotId", snap},
      {"BlockDeviceMapping.1.Ebs.DeleteOnTermination", "true"}};
  if (a.Has("description")) params["Description"] = a.Get("description");
  if (a.Has("boot-mode")) params["BootMode"] = a.Get("boot-mode");
  json image;
  if (int rc = Ec2(endpoint, "RegisterImage", params, &image, ""); rc != 0) {
    (void)strata::tools::CallEc2(endpoint, "DeleteSnapshot", {{"SnapshotId", snap}});
    return cleanup(rc);
  }
  cleanup(0);
  PrintResult(
      json({{"ImageId", image.value("imageId", "")}, {"SnapshotId", snap}, {"Name", name}}).dump(2),
      format);
  return 0;
}

int ApiCommand(const Args& a, const std::string& dir) {
  const auto& p = a.positional();
  const std::string format = a.Get("output", "json");
  if (format != "json" && format != "text" && format != "table") {
    return Fail(absl::InvalidArgumentError("--output is json, text or table"));
  }
  absl::StatusOr<strata::tools::ApiEndpoint> endpoint =
      strata::tools::LoadEndpoint(dir, a.Get("endpoint", ""), a.Get("region", ""));
  if (!endpoint.ok()) return Fail(endpoint.status());
  const std::string nbd = a.Get("nbd", "127.0.0.1:10809");
  if (p[0] == "ec2") {
    if (p.size() < 2) return Fail(absl::InvalidArgumentError("usage: ec2 ACTION [Name=Value ...]"));
    std::map<std::string, std::string> params;
    for (size_t i = 2; i < p.size(); ++i) {
      const size_t eq = p[i].find('=');
      if (eq == std::string::npos || eq == 0) {
        return Fail(
            absl::InvalidArgumentError(absl::StrCat("parameter \"", p[i], "\" is not Name=Value")));
      }
      params[p[i].substr(0, eq)] = p[i].substr(eq + 1);
    }
    return Ec2(*endpoint, p[1], params, nullptr, format);
  }
  if (p[0] == "status") {
    json volumes, snapshots;
    if (int rc = Ec2(*endpoint, "DescribeVolumes", {}, &volumes, ""); rc != 0) return rc;
    if (int rc = Ec2(*endpoint, "DescribeSnapshots", {{"Owner.1", "self"}}, &snapshots, "");
        rc != 0)
      return rc;
    json exports = json::array();
    for (const json& v : AsList(volumes["volumeSet"])) {
      if (v.value("status", "") == "in-use")
        exports.push_back("nbd://" + nbd + "/" + v.value("volumeId", ""));
    }
    json status = {{"Endpoint", endpoint->url},
                   {"Region", endpoint->region},
                   {"Volumes", AsList(volumes["volumeSet"]).size()},
                   {"Snapshots", AsList(snapshots["snapshotSet"]).size()},
                   {"NbdExports", exports}};
    PrintResult(status.dump(2), format);
    return 0;
  }
  if (p[0] == "attach" || p[0] == "detach") {
    if (p.size() != 2)
      return Fail(absl::InvalidArgumentError(absl::StrCat("usage: ", p[0], " VOLUME")));
    const std::string& volume = p[1];
    if (p[0] == "detach")
      return Ec2(*endpoint, "DetachVolume", {{"VolumeId", volume}}, nullptr, format);
    const std::string instance = a.Get("instance-id", "i-00000000000000001");
    std::string device = a.Get("device", "");
    if (device.empty()) {  // The first /dev/sdX the group does not use.
      json attached;
      if (int rc =
              Ec2(*endpoint, "DescribeVolumes",
                  {{"Filter.1.Name", "attachment.instance-id"}, {"Filter.1.Value.1", instance}},
                  &attached, "");
          rc != 0) {
        return rc;
      }
      std::set<std::string> used;
      for (const json& v : AsList(attached["volumeSet"])) {
        for (const json& at : AsList(v["attachmentSet"])) used.insert(at.value("device", ""));
      }
      for (char c = 'f'; c <= 'z' && device.empty(); ++c) {
        if (!used.contains(std::string("/dev/sd") + c)) device = std::string("/dev/sd") + c;
      }
    }
    json attachment;
    if (int rc = Ec2(*endpoint, "AttachVolume",
                     {{"VolumeId", volume}, {"InstanceId", instance}, {"Device", device}},
                     &attachment, "");
        rc != 0) {
      return rc;
    }
    const std::string host = nbd.substr(0, nbd.rfind(':'));
    const std::string port = nbd.substr(nbd.rfind(':') + 1);
    json out = {{"Attachment", attachment},
                {"NbdUri", "nbd://" + nbd + "/" + volume},
                {"NbdUnixUri", "nbd+unix:///" + volume + "?socket=" +
                                   std::filesystem::absolute(dir).lexically_normal().string() +
                                   "/nbd.sock"},
                {"Use",
                 {"nbdinfo nbd://" + nbd + "/" + volume,
                  "qemu-system-x86_64 ... -drive file=nbd://" + nbd + "/" + volume +
                      ",format=raw,if=virtio",
                  "nbd-client " + host + " " + port + " /dev/nbd0 -N " + volume +
                      "   # needs the nbd kernel module"}}};
    PrintResult(out.dump(2), format);
    return 0;
  }
  if (p[0] == "import-image") return ImportImage(a, *endpoint, dir, format);
  if (p[0] == "console") {
    if (p.size() != 2) return Fail(absl::InvalidArgumentError("usage: console INSTANCE"));
    json out;
    if (int rc = Ec2(*endpoint, "GetConsoleOutput", {{"InstanceId", p[1]}}, &out, ""); rc != 0)
      return rc;
    std::string text;
    absl::Base64Unescape(out.value("output", ""), &text);
    std::fwrite(text.data(), 1, text.size(), stdout);
    return 0;
  }
  if (p[0] == "instances") {
    json described;
    if (int rc = Ec2(*endpoint, "DescribeInstances", {}, &described, ""); rc != 0) return rc;
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
    PrintResult(out.dump(2), format);
    return 0;
  }
  return Fail(absl::InvalidArgumentError(absl::StrCat("unknown command \"", p[0], "\"")));
}

// Prints shell exports for the aws CLI and SDKs: the credentials stratad wrote on first start.
int PrintEnv(const std::string& dir, const std::string& endpoint) {
  const std::string credentials = dir + "/credentials";
  std::ifstream in(credentials);
  if (!in) {
    std::fprintf(stderr,
                 "strata: %s is missing: start stratad once on %s (scripts/run.sh) to create it\n",
                 credentials.c_str(), dir.c_str());
    return 1;
  }
  const std::string abs = std::filesystem::absolute(dir).lexically_normal().string();
  std::printf("export AWS_SHARED_CREDENTIALS_FILE=%s/credentials\n", abs.c_str());
  std::printf("export AWS_CONFIG_FILE=%s/config\n", abs.c_str());
  std::printf("export AWS_ENDPOINT_URL=%s\n", endpoint.c_str());
  std::printf("# aws --endpoint-url %s ec2 describe-volumes\n", endpoint.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // --tag may repeat: collect it before the parser (which keeps one value per name).
  std::vector<std::string> tags;
  std::vector<char*> rest;
  for (int i = 0; i < argc; ++i) {
    if (std::string(argv[i]) == "--tag" && i + 1 < argc) {
      tags.push_back(argv[++i]);
    } else {
      rest.push_back(argv[i]);
    }
  }
  auto args = Args::Parse(static_cast<int>(rest.size()), rest.data(), 1,
                          {"data-dir", "region", "size", "snapshot", "offset", "rate",
                           "description", "endpoint", "output", "nbd", "instance-id", "device",
                           "kms-root-key-file", "name", "architecture", "boot-mode", "nbd-socket"},
                          {"help"});
  if (!args.ok()) {
    std::fprintf(stderr, "strata: %s\n%s", std::string(args.status().message()).c_str(), kUsage);
    return 2;
  }
  if (args->Has("help") || args->positional().empty()) {
    std::fputs(kUsage, args->Has("help") ? stdout : stderr);
    return args->Has("help") ? 0 : 2;
  }
  const std::string command = args->positional()[0];
  const std::string dir = args->Get("data-dir", "./data");
  if (command == "env") return PrintEnv(dir, args->Get("endpoint", "http://127.0.0.1:8150"));
  if (command == "copy-stats") return CopyStats(*args, dir);
  if (command == "status" || command == "attach" || command == "detach" || command == "ec2" ||
      command == "import-image" || command == "console" || command == "instances") {
    return ApiCommand(*args, dir);
  }
  if (command == "init") {
    auto store = strata::Store::Open(dir, {});
    if (!store.ok()) return Fail(store.status());
    absl::StatusOr<bool> created = strata::tools::EnsureAdmin(**store, dir);
    if (!created.ok()) return Fail(created.status());
    store->reset();
    std::fprintf(stderr, "strata: store in %s %s; start it with: build/bin/stratad --data-dir %s\n",
                 dir.c_str(), *created ? "created with an admin account" : "already set up",
                 dir.c_str());
    return PrintEnv(dir, args->Get("endpoint", "http://127.0.0.1:8150"));
  }
  if (command != "volume" && command != "snapshot" && command != "region" && command != "gc" &&
      command != "stats" && command != "account") {
    std::fprintf(stderr, "strata: unknown command \"%s\"\n%s", command.c_str(), kUsage);
    return 2;
  }
  strata::StoreOptions options;
  options.background_work = false;  // The CLI runs background work itself, then exits.
  // The root key, if the store has one (never made here: stratad makes it on first start).
  absl::StatusOr<strata::SecretBytes> root_key = strata::tools::LoadKmsRootKey(
      args->Get("kms-root-key-file", strata::tools::DefaultKmsRootKeyPath(dir)),
      /*generate=*/false, nullptr);
  if (!root_key.ok()) return Fail(root_key.status());
  options.kms_root_key = std::move(*root_key);
  auto store = strata::Store::Open(args->Get("data-dir", "./data"), options);
  if (!store.ok() && store.status().code() == absl::StatusCode::kFailedPrecondition &&
      command == "account" && args->positional().size() == 3 && args->positional()[1] == "create") {
    // stratad has the store: ask it (as the admin account).
    absl::StatusOr<strata::tools::ApiEndpoint> endpoint =
        strata::tools::LoadEndpoint(dir, args->Get("endpoint", ""), args->Get("region", ""));
    if (!endpoint.ok()) return Fail(endpoint.status());
    json created;
    if (int rc =
            Ec2(*endpoint, "CreateAccount", {{"AccountName", args->positional()[2]}}, &created, "");
        rc != 0) {
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
  if (!store.ok()) return Fail(store.status());
  if (command == "region") {
    const auto& p = args->positional();
    if (p.size() == 2 && p[1] == "list") {
      for (const auto& name : (*store)->ListRegions()) std::printf("%s\n", name.c_str());
      return 0;
    }
    if (p.size() == 3 && p[1] == "create") {
      auto r = (*store)->CreateRegion(p[2]);
      return r.ok() ? 0 : Fail(r.status());
    }
    return Fail(absl::InvalidArgumentError("usage: region list | region create NAME"));
  }
  if (command == "account") {
    const auto& p = args->positional();
    auto print = [](const strata::Account& a) {
      std::printf(
          "{\"AccountId\": \"%s\", \"Name\": \"%s\", \"AccessKeyId\": \"%s\", "
          "\"SecretAccessKey\": \"%s\"}\n",
          a.id.c_str(), a.name.c_str(), a.access_key_id.c_str(), a.secret_access_key.c_str());
    };
    if (p.size() == 3 && p[1] == "create") {
      auto account = (*store)->CreateAccount(p[2]);
      if (!account.ok()) return Fail(account.status());
      print(*account);
      return 0;
    }
    if (p.size() == 2 && p[1] == "list") {
      for (const auto& a : (*store)->ListAccounts()) print(a);
      return 0;
    }
    return Fail(absl::InvalidArgumentError("usage: account create NAME | account list"));
  }
  strata::Region* region = (*store)->DefaultRegion();
  if (args->Has("region")) {
    auto r = (*store)->GetRegion(args->Get("region"));
    if (!r.ok()) return Fail(r.status());
    region = *r;
  }
  absl::Status status;
  if (command == "volume") status = VolumeCommand(*region, *args, tags);
  if (command == "snapshot") status = SnapshotCommand(*region, *args);
  if (command == "gc") {
    auto reclaimed = region->CollectGarbage();
    status = reclaimed.status();
    if (reclaimed.ok()) std::printf("reclaimed %llu bytes\n", (unsigned long long)*reclaimed);
  }
  if (command == "stats") {
    auto s = region->GetStats();
    status = s.status();
    if (s.ok()) {
      std::printf(
          "chunks=%llu references=%llu stored_bytes=%llu segment_bytes=%llu segments=%llu\n",
          (unsigned long long)s->chunk_count, (unsigned long long)s->referenced_chunk_count,
          (unsigned long long)s->stored_bytes, (unsigned long long)s->segment_file_bytes,
          (unsigned long long)s->segment_count);
    }
  }
  if (status.ok()) status = region->RunBackgroundWork();
  return status.ok() ? 0 : Fail(status);
}
