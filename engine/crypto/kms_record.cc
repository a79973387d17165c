// A KMS key's record in storage, and the helpers every KMS source file uses.

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "crypto/aead.h"
#include "crypto/kms_internal.h"
#include "nlohmann/json.hpp"
#include "strata/aws_error.h"

namespace strata::crypto {

using json = nlohmann::json;

namespace kms {

absl::Status NotFound(const std::string& what) {
  return AwsError(absl::StatusCode::kNotFound, "NotFoundException", what);
}
absl::Status Invalid(const std::string& what) {
  return AwsError(absl::StatusCode::kInvalidArgument, "ValidationException", what);
}

std::string NewUuid() {
  const std::string r = RandomBytes(16);
  const std::string h = absl::BytesToHexString(r);
  return absl::StrCat(h.substr(0, 8), "-", h.substr(8, 4), "-4", h.substr(13, 3), "-a",
                      h.substr(17, 3), "-", h.substr(20, 12));
}

std::string MaterialAad(const std::string& key_id, uint32_t version) {
  return absl::StrCat("strata-kms-material\n", key_id, "\n", version);
}

std::string DefaultPolicy(const std::string& account) {
  return json({{"Version", "2012-10-17"},
               {"Id", "key-default-1"},
               {"Statement",
                {{{"Sid", "Enable IAM User Permissions"},
                  {"Effect", "Allow"},
                  {"Principal", {{"AWS", absl::StrCat("arn:aws:iam::", account, ":root")}}},
                  {"Action", "kms:*"},
                  {"Resource", "*"}}}}})
      .dump();
}

}  // namespace kms

std::string KmsImpl::Record::Encode() const {
  json grants_json = json::array();
  for (const KmsGrant& g : grants) {
    grants_json.push_back({{"id", g.grant_id},
                           {"token", g.grant_token},
                           {"name", g.name},
                           {"grantee", g.grantee},
                           {"retiring", g.retiring},
                           {"issuer", g.issuing_account},
                           {"ops", g.operations},
                           {"created", g.creation_micros}});
  }
  json material_json = json::array();
  for (const std::string& m : material) material_json.push_back(absl::Base64Escape(m));
  return json({{"id", info.key_id},
               {"account", info.account},
               {"description", info.description},
               {"manager", info.manager},
               {"state", static_cast<int>(info.state)},
               {"created", info.creation_micros},
               {"deletion", info.deletion_micros},
               {"rotation", info.rotation_enabled},
               {"period", info.rotation_period_days},
               {"rotations", info.rotation_micros},
               {"last_rotation", last_rotation_micros},
               {"tags", info.tags},
               {"policy", policy},
               {"material", material_json},
               {"grants", grants_json}})
      .dump();
}

std::optional<KmsImpl::Record> KmsImpl::Record::Decode(const std::string& bytes) {
  json j = json::parse(bytes, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return std::nullopt;
  try {
    Record r;
    r.info.key_id = j.at("id");
    r.info.account = j.at("account");
    r.info.description = j.at("description");
    r.info.manager = j.at("manager");
    r.info.state = static_cast<KmsKeyState>(j.at("state").get<int>());
    r.info.creation_micros = j.at("created");
    r.info.deletion_micros = j.at("deletion");
    r.info.rotation_enabled = j.at("rotation");
    r.info.rotation_period_days = j.at("period");
    r.info.rotation_micros = j.at("rotations").get<std::vector<uint64_t>>();
    r.last_rotation_micros = j.at("last_rotation");
    r.info.tags = j.at("tags").get<std::map<std::string, std::string>>();
    r.policy = j.at("policy");
    for (const json& m : j.at("material")) {
      std::string raw;
      if (!absl::Base64Unescape(m.get<std::string>(), &raw)) return std::nullopt;
      r.material.push_back(std::move(raw));
    }
    for (const json& g : j.at("grants")) {
      KmsGrant grant;
      grant.grant_id = g.at("id");
      grant.grant_token = g.at("token");
      grant.key_id = r.info.key_id;
      grant.name = g.at("name");
      grant.grantee = g.at("grantee");
      grant.retiring = g.at("retiring");
      grant.issuing_account = g.at("issuer");
      grant.operations = g.at("ops").get<std::vector<std::string>>();
      grant.creation_micros = g.at("created");
      r.grants.push_back(std::move(grant));
    }
    return r;
  } catch (const json::exception&) {
    return std::nullopt;
  }
}

}  // namespace strata::crypto
