#include "image/image_records.h"

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace strata::image {
namespace {

using json = nlohmann::json;

json MappingJson(const BlockDeviceMapping& m) {
  json j = {{"device", m.device_name}};
  if (!m.virtual_name.empty()) j["virtual"] = m.virtual_name;
  if (m.no_device) j["no_device"] = true;
  if (m.ebs.has_value()) {
    const EbsBlockDevice& e = *m.ebs;
    j["ebs"] = {{"snapshot", e.snapshot_id},  {"size_gib", e.volume_size_gib},
                {"type", e.volume_type},      {"iops", e.iops},
                {"throughput", e.throughput}, {"dot", e.delete_on_termination},
                {"encrypted", e.encrypted},   {"kms_key", e.kms_key_id}};
  }
  return j;
}

BlockDeviceMapping MappingFromJson(const json& j) {
  BlockDeviceMapping m;
  m.device_name = j.at("device").get<std::string>();
  m.virtual_name = j.value("virtual", "");
  m.no_device = j.value("no_device", false);
  if (j.contains("ebs")) {
    const json& e = j.at("ebs");
    EbsBlockDevice ebs;
    ebs.snapshot_id = e.value("snapshot", "");
    ebs.volume_size_gib = e.value("size_gib", uint64_t{0});
    ebs.volume_type = e.value("type", "gp3");
    ebs.iops = e.value("iops", uint64_t{0});
    ebs.throughput = e.value("throughput", uint64_t{0});
    ebs.delete_on_termination = e.value("dot", true);
    ebs.encrypted = e.value("encrypted", false);
    ebs.kms_key_id = e.value("kms_key", "");
    m.ebs = ebs;
  }
  return m;
}

template <typename T>
absl::StatusOr<T> Parse(const std::string& bytes, const char* what, T (*from)(const json&)) {
  try {
    return from(json::parse(bytes));
  } catch (const json::exception& e) {
    return absl::DataLossError(absl::StrCat("corrupt ", what, " record: ", e.what()));
  }
}

ImageInfo ImageFromJson(const json& j) {
  ImageInfo i;
  i.id = j.at("id").get<std::string>();
  i.name = j.value("name", "");
  i.description = j.value("description", "");
  i.owner = j.value("owner", "");
  i.architecture = j.value("architecture", "x86_64");
  i.virtualization_type = j.value("virtualization", "hvm");
  i.boot_mode = j.value("boot_mode", "");
  i.root_device_name = j.value("root_device", "");
  i.kernel_id = j.value("kernel", "");
  i.ramdisk_id = j.value("ramdisk", "");
  i.ena_support = j.value("ena", false);
  i.tpm_support = j.value("tpm", "");
  i.imds_support = j.value("imds", "");
  i.tags = j.value("tags", std::map<std::string, std::string>{});
  for (const json& m : j.value("mappings", json::array())) i.mappings.push_back(MappingFromJson(m));
  i.state = static_cast<ImageState>(j.value("state", 0));
  i.state_reason = j.value("state_reason", "");
  i.creation_micros = j.value("created", uint64_t{0});
  i.launch_permissions = j.value("launch", std::vector<std::string>{});
  i.deprecation_micros = j.value("deprecation", uint64_t{0});
  i.deregistration_protection = j.value("protected", false);
  i.protection_cooldown = j.value("cooldown", false);
  i.protected_until_micros = j.value("protected_until", uint64_t{0});
  i.source_image_id = j.value("source_image", "");
  i.source_image_region = j.value("source_region", "");
  i.source_instance_id = j.value("source_instance", "");
  i.last_launched_micros = j.value("last_launched", uint64_t{0});
  if (const uint64_t recycled = j.value("recycled", uint64_t{0}); recycled != 0) {
    i.recycle_bin = RecycleBinEntry{recycled, j.value("recycle_until", uint64_t{0})};
  }
  return i;
}

ImageSettings SettingsFromJson(const json& j) {
  ImageSettings s;
  s.block_public_access = j.value("block_public_access", true);
  s.allowed_images_state = j.value("allowed_state", "disabled");
  s.image_criteria = j.value("criteria", std::vector<std::vector<std::string>>{});
  return s;
}

InstanceInfo InstanceFromJson(const json& j) {
  InstanceInfo i;
  i.id = j.at("id").get<std::string>();
  i.image_id = j.value("image", "");
  i.owner = j.value("owner", "");
  i.instance_type = j.value("type", "");
  i.state = static_cast<InstanceState>(j.value("state", 0));
  i.state_reason = j.value("state_reason", "");
  i.launch_micros = j.value("launched", uint64_t{0});
  i.tags = j.value("tags", std::map<std::string, std::string>{});
  std::string user_data;
  absl::Base64Unescape(j.value("user_data", ""), &user_data);
  i.user_data = std::move(user_data);
  i.root_device_name = j.value("root_device", "");
  i.architecture = j.value("architecture", "");
  i.hypervisor = j.value("hypervisor", "");
  for (const json& v : j.value("volumes", json::array())) {
    i.volumes.push_back({v.at("device").get<std::string>(), v.at("volume").get<std::string>(),
                         v.value("dot", true)});
  }
  return i;
}

}  // namespace

std::string EncodeImage(const ImageInfo& i) {
  json mappings = json::array();
  for (const BlockDeviceMapping& m : i.mappings) mappings.push_back(MappingJson(m));
  json j = {{"id", i.id},
            {"name", i.name},
            {"description", i.description},
            {"owner", i.owner},
            {"architecture", i.architecture},
            {"virtualization", i.virtualization_type},
            {"boot_mode", i.boot_mode},
            {"root_device", i.root_device_name},
            {"kernel", i.kernel_id},
            {"ramdisk", i.ramdisk_id},
            {"ena", i.ena_support},
            {"tpm", i.tpm_support},
            {"imds", i.imds_support},
            {"tags", i.tags},
            {"mappings", mappings},
            {"state", static_cast<int>(i.state)},
            {"state_reason", i.state_reason},
            {"created", i.creation_micros},
            {"launch", i.launch_permissions},
            {"deprecation", i.deprecation_micros},
            {"protected", i.deregistration_protection},
            {"cooldown", i.protection_cooldown},
            {"protected_until", i.protected_until_micros},
            {"source_image", i.source_image_id},
            {"source_region", i.source_image_region},
            {"source_instance", i.source_instance_id},
            {"last_launched", i.last_launched_micros}};
  if (i.recycle_bin.has_value()) {
    j["recycled"] = i.recycle_bin->enter_micros;
    j["recycle_until"] = i.recycle_bin->exit_micros;
  }
  return j.dump();
}

absl::StatusOr<ImageInfo> DecodeImage(const std::string& bytes) {
  return Parse<ImageInfo>(bytes, "image", &ImageFromJson);
}

std::string EncodeSettings(const ImageSettings& s) {
  json j = {{"block_public_access", s.block_public_access},
            {"allowed_state", s.allowed_images_state},
            {"criteria", s.image_criteria}};
  return j.dump();
}

absl::StatusOr<ImageSettings> DecodeSettings(const std::string& bytes) {
  return Parse<ImageSettings>(bytes, "image settings", &SettingsFromJson);
}

std::string EncodeInstance(const InstanceInfo& i) {
  json volumes = json::array();
  for (const InstanceVolume& v : i.volumes) {
    volumes.push_back(
        {{"device", v.device_name}, {"volume", v.volume_id}, {"dot", v.delete_on_termination}});
  }
  json j = {{"id", i.id},
            {"image", i.image_id},
            {"owner", i.owner},
            {"type", i.instance_type},
            {"state", static_cast<int>(i.state)},
            {"state_reason", i.state_reason},
            {"launched", i.launch_micros},
            {"tags", i.tags},
            {"user_data", absl::Base64Escape(i.user_data)},
            {"root_device", i.root_device_name},
            {"architecture", i.architecture},
            {"hypervisor", i.hypervisor},
            {"volumes", volumes}};
  return j.dump();
}

absl::StatusOr<InstanceInfo> DecodeInstance(const std::string& bytes) {
  return Parse<InstanceInfo>(bytes, "instance", &InstanceFromJson);
}

}  // namespace strata::image
