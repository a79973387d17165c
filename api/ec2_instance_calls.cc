// The EC2 calls about instances: run (a volume per block device mapping, a VM booted from
// them), describe, stop, start, reboot, terminate, console output, instance types and status.

#include <algorithm>
#include <functional>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "ec2_image_call_base.h"

namespace strata::api {
namespace {

constexpr int64_t kMaxLaunchCount = 20;

class InstanceCalls : public ImageCallBase {
 public:
  explicit InstanceCalls(const Ec2CallContext& c) : ImageCallBase(c) {}

  std::optional<Result> Run(const std::string& action) {
    static const std::map<std::string, Result (InstanceCalls::*)()> kActions = {
        {"RunInstances", &InstanceCalls::RunInstances},
        {"DescribeInstances", &InstanceCalls::DescribeInstances},
        {"StopInstances", &InstanceCalls::StopInstances},
        {"StartInstances", &InstanceCalls::StartInstances},
        {"RebootInstances", &InstanceCalls::RebootInstances},
        {"TerminateInstances", &InstanceCalls::TerminateInstances},
        {"GetConsoleOutput", &InstanceCalls::GetConsoleOutput},
        {"DescribeInstanceTypes", &InstanceCalls::DescribeInstanceTypes},
        {"DescribeInstanceStatus", &InstanceCalls::DescribeInstanceStatus},
    };
    return Dispatch(*this, kActions, action);
  }

 private:
  void WriteInstance(const InstanceInfo& i) {
    x_.Open("item");
    x_.Text("instanceId", i.id);
    x_.Text("imageId", i.image_id);
    WriteState("instanceState", i.state);
    x_.Text("privateDnsName", "");
    x_.Text("dnsName", "");
    x_.Text("reason", i.state_reason);
    x_.Number("amiLaunchIndex", 0);
    x_.Text("instanceType", i.instance_type);
    x_.Text("launchTime", IsoTime(i.launch_micros));
    x_.Open("placement");
    x_.Text("availabilityZone", region_.name() + "a");
    x_.Text("tenancy", "default");
    x_.Close();
    x_.Open("monitoring");
    x_.Text("state", "disabled");
    x_.Close();
    WriteStateReason(x_, i.state_reason);
    x_.Text("architecture", i.architecture);
    x_.Text("rootDeviceType", "ebs");
    x_.Text("rootDeviceName", i.root_device_name);
    x_.Open("blockDeviceMapping");
    if (i.state != InstanceState::kTerminated) {
      for (const InstanceVolume& v : i.volumes) {
        x_.Open("item");
        x_.Text("deviceName", v.device_name);
        x_.Open("ebs");
        x_.Text("volumeId", v.volume_id);
        x_.Text("status", "attached");
        x_.Text("attachTime", IsoTime(i.launch_micros));
        x_.Bool("deleteOnTermination", v.delete_on_termination);
        if (!options_.nbd_uri_template.empty()) {
          x_.Text("strataNbdUri",
                  absl::StrReplaceAll(
                      options_.nbd_uri_template,
                      {{"{export}", v.volume_id}, {"{access_key_id}", account_.access_key_id}}));
        }
        x_.Close();
        x_.Close();
      }
    }
    x_.Close();
    x_.Text("virtualizationType", "hvm");
    x_.Text("hypervisor", i.hypervisor.empty() ? "none" : "kvm");
    WriteTags(x_, i.tags);
    x_.Close();
  }

  Result RunInstances() {
    const std::string image_id = p_.GetOr("ImageId", "");
    if (image_id.empty()) return Missing("ImageId");
    if (!absl::StartsWith(image_id, "ami-")) return Fail(Malformed(image_id));
    absl::StatusOr<std::optional<int64_t>> min = p_.GetInt("MinCount");
    absl::StatusOr<std::optional<int64_t>> max = p_.GetInt("MaxCount");
    if (!min.ok()) return Invalid(std::string(min.status().message()));
    if (!max.ok()) return Invalid(std::string(max.status().message()));
    const int64_t min_count = min->value_or(1), max_count = max->value_or(min_count);
    if (min_count < 1 || max_count < min_count) {
      return Invalid("MinCount must be at least 1 and at most MaxCount");
    }
    if (min_count > kMaxLaunchCount) {
      return Ec2Error{400, "InstanceLimitExceeded",
                      absl::StrCat("at most ", kMaxLaunchCount, " instances per call")};
    }
    LaunchRequest request;
    request.image_id = image_id;
    request.owner = account_.id;
    request.instance_type = p_.GetOr("InstanceType", "t3.micro");
    absl::StatusOr<std::vector<BlockDeviceMapping>> mappings = Mappings();
    if (!mappings.ok()) return Fail(mappings.status());
    request.mappings = *mappings;
    absl::StatusOr<std::map<std::string, std::map<std::string, std::string>>> tags =
        TagSpecsByType(p_, {"instance", "volume"});
    if (!tags.ok()) return Invalid(std::string(tags.status().message()));
    request.tags = (*tags)["instance"];
    request.volume_tags = (*tags)["volume"];
    const std::string user_data = p_.GetOr("UserData", "");
    if (!user_data.empty() && !absl::Base64Unescape(user_data, &request.user_data)) {
      return Invalid("UserData must be base64");
    }
    // Images the caller may not see are "not found", as on AWS.
    if (absl::StatusOr<ImageInfo> image = images_.DescribeImage(image_id); !image.ok()) {
      return Fail(image.status());
    }
    std::vector<InstanceInfo> launched;
    for (int64_t n = 0; n < std::min(max_count, kMaxLaunchCount); ++n) {
      absl::StatusOr<InstanceInfo> instance = images_.RunInstance(request);
      if (!instance.ok()) {
        if (static_cast<int64_t>(launched.size()) >= min_count) break;
        for (const InstanceInfo& i : launched) (void)images_.TerminateInstance(i.id);
        return Fail(instance.status());
      }
      launched.push_back(*instance);
    }
    x_.Text("reservationId", ReservationId(launched.front().id));
    x_.Text("ownerId", account_.id);
    x_.Open("groupSet");
    x_.Close();
    x_.Open("instancesSet");
    for (const InstanceInfo& i : launched) WriteInstance(i);
    x_.Close();
    return x_.Finish();
  }

  Result DescribeInstances() {
    absl::StatusOr<std::vector<InstanceInfo>> all = RequestedInstances(false);
    if (!all.ok()) return Fail(all.status());
    const std::vector<Filter> filters = ParseFilters(p_);
    std::vector<const InstanceInfo*> kept;
    for (const InstanceInfo& i : *all) {
      Facets f = {{"instance-id", i.id},
                  {"image-id", i.image_id},
                  {"instance-type", i.instance_type},
                  {"instance-state-name", InstanceStateName(i.state)},
                  {"instance-state-code", absl::StrCat(InstanceStateCode(i.state))},
                  {"architecture", i.architecture},
                  {"root-device-name", i.root_device_name},
                  {"root-device-type", "ebs"},
                  {"owner-id", i.owner},
                  {"reservation-id", ReservationId(i.id)},
                  {"availability-zone", region_.name() + "a"}};
      for (const InstanceVolume& v : i.volumes) {
        f.insert({"block-device-mapping.volume-id", v.volume_id});
        f.insert({"block-device-mapping.device-name", v.device_name});
      }
      absl::StatusOr<bool> match = MatchesFilters(filters, f, i.tags);
      if (!match.ok()) return Invalid(std::string(match.status().message()));
      if (*match) kept.push_back(&i);
    }
    absl::StatusOr<Page> page = Paginate(p_, kept.size(), 5, 1000);
    if (!page.ok()) return Invalid(std::string(page.status().message()));
    x_.Open("reservationSet");
    for (size_t n = page->begin; n < page->end; ++n) {
      x_.Open("item");
      x_.Text("reservationId", ReservationId(kept[n]->id));
      x_.Text("ownerId", kept[n]->owner);
      x_.Open("groupSet");
      x_.Close();
      x_.Open("instancesSet");
      WriteInstance(*kept[n]);
      x_.Close();
      x_.Close();
    }
    x_.Close();
    if (!page->next_token.empty()) x_.Text("nextToken", page->next_token);
    return x_.Finish();
  }

  // Stop/Start/Terminate: every id is checked before any changes.
  Result ChangeInstances(
      const std::function<absl::StatusOr<InstanceInfo>(const std::string&)>& op) {
    absl::StatusOr<std::vector<InstanceInfo>> before = RequestedInstances(true);
    if (!before.ok()) return Fail(before.status());
    x_.Open("instancesSet");
    for (const InstanceInfo& b : *before) {
      absl::StatusOr<InstanceInfo> after = op(b.id);
      if (!after.ok()) return Fail(after.status());
      x_.Open("item");
      x_.Text("instanceId", b.id);
      WriteState("currentState", after->state);
      WriteState("previousState", b.state);
      x_.Close();
    }
    x_.Close();
    return x_.Finish();
  }
  Result StopInstances() {
    absl::StatusOr<std::optional<bool>> force = p_.GetBool("Force");
    if (!force.ok()) return Invalid(std::string(force.status().message()));
    return ChangeInstances(
        [&](const std::string& id) { return images_.StopInstance(id, force->value_or(false)); });
  }
  Result StartInstances() {
    return ChangeInstances([&](const std::string& id) { return images_.StartInstance(id); });
  }
  Result TerminateInstances() {
    return ChangeInstances([&](const std::string& id) { return images_.TerminateInstance(id); });
  }
  Result RebootInstances() {
    absl::StatusOr<std::vector<InstanceInfo>> instances = RequestedInstances(true);
    if (!instances.ok()) return Fail(instances.status());
    for (const InstanceInfo& i : *instances) {
      if (absl::Status s = images_.RebootInstance(i.id); !s.ok()) return Fail(s);
    }
    return ReturnTrue();
  }

  Result GetConsoleOutput() {
    const std::string id = p_.GetOr("InstanceId", "");
    if (id.empty()) return Missing("InstanceId");
    absl::StatusOr<InstanceInfo> instance = OwnedInstance(id);
    if (!instance.ok()) return Fail(instance.status());
    absl::StatusOr<std::string> output = images_.ConsoleOutput(id);
    if (!output.ok()) return Fail(output.status());
    // EC2 returns the last 64 KiB.
    const std::string tail =
        output->size() > 65536 ? output->substr(output->size() - 65536) : *output;
    x_.Text("instanceId", id);
    x_.Text("timestamp", IsoTime(NowMicros()));
    x_.Text("output", absl::Base64Escape(tail));
    return x_.Finish();
  }

  // The status checks of an instance: "ok" while its VM runs (Strata does not probe the guest).
  static const char* CheckStatus(const InstanceInfo& i) {
    return i.state == InstanceState::kRunning ? "ok" : "not-applicable";
  }

  Result DescribeInstanceStatus() {
    absl::StatusOr<std::optional<bool>> all_states = p_.GetBool("IncludeAllInstances");
    if (!all_states.ok()) return Invalid(std::string(all_states.status().message()));
    absl::StatusOr<std::vector<InstanceInfo>> all = RequestedInstances(false);
    if (!all.ok()) return Fail(all.status());
    const std::vector<Filter> filters = ParseFilters(p_);
    std::vector<const InstanceInfo*> kept;
    for (const InstanceInfo& i : *all) {
      if (i.state != InstanceState::kRunning && !all_states->value_or(false)) continue;
      const std::string status = CheckStatus(i);
      absl::StatusOr<bool> match =
          MatchesFilters(filters,
                         {{"instance-state-name", InstanceStateName(i.state)},
                          {"instance-state-code", absl::StrCat(InstanceStateCode(i.state))},
                          {"instance-status.status", status},
                          {"system-status.status", status},
                          {"availability-zone", region_.name() + "a"}},
                         {});
      if (!match.ok()) return Invalid(std::string(match.status().message()));
      if (*match) kept.push_back(&i);
    }
    absl::StatusOr<Page> page = Paginate(p_, kept.size(), 5, 1000);
    if (!page.ok()) return Invalid(std::string(page.status().message()));
    x_.Open("instanceStatusSet");
    for (size_t n = page->begin; n < page->end; ++n) {
      const InstanceInfo& i = *kept[n];
      const std::string status = CheckStatus(i);
      x_.Open("item");
      x_.Text("instanceId", i.id);
      x_.Text("availabilityZone", region_.name() + "a");
      WriteState("instanceState", i.state);
      for (const char* kind : {"systemStatus", "instanceStatus"}) {
        x_.Open(kind);
        x_.Text("status", status);
        x_.Open("details");  // Strata does not probe the guest: no reachability check.
        x_.Close();
        x_.Close();
      }
      x_.Close();
    }
    x_.Close();
    if (!page->next_token.empty()) x_.Text("nextToken", page->next_token);
    return x_.Finish();
  }

  Result DescribeInstanceTypes() {
    const std::vector<std::string> names = p_.List("InstanceType");
    x_.Open("instanceTypeSet");
    for (const InstanceType& t : InstanceTypes()) {
      if (!names.empty() && std::find(names.begin(), names.end(), t.name) == names.end()) continue;
      x_.Open("item");
      x_.Text("instanceType", t.name);
      x_.Open("vCpuInfo");
      x_.Number("defaultVCpus", t.vcpus);
      x_.Close();
      x_.Open("memoryInfo");
      x_.Number("sizeInMiB", t.memory_mib);
      x_.Close();
      x_.Text("hypervisor", "kvm");
      x_.Close();
    }
    x_.Close();
    return x_.Finish();
  }
};

}  // namespace

std::optional<Result> RunInstanceCall(const Ec2CallContext& c, const std::string& action) {
  return InstanceCalls(c).Run(action);
}

}  // namespace strata::api
