#include "crypto/kms_impl.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "crypto/aead.h"
#include "nlohmann/json.hpp"
#include "strata/aws_error.h"

namespace strata {

const char* KmsKeyStateName(KmsKeyState state) {
  switch (state) {
    case KmsKeyState::kEnabled:
      return "Enabled";
    case KmsKeyState::kDisabled:
      return "Disabled";
    case KmsKeyState::kPendingDeletion:
      return "PendingDeletion";
  }
  return "Unknown";
}

std::string KmsErrorCode(const absl::Status& status) { return AwsErrorCode(status); }

namespace crypto {
namespace {

using json = nlohmann::json;

constexpr char kBlobMagic[] = "SKC1";
constexpr size_t kKeyIdBytes = 36;
constexpr size_t kBlobHeaderBytes = 4 + kKeyIdBytes + 4;
constexpr uint64_t kDayMicros = 86400ull * 1000000;
constexpr char kEbsAlias[] = "alias/aws/ebs";

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

std::string BlobAad(const std::string& key_id, uint32_t version, const EncryptionContext& context) {
  std::string aad = absl::StrCat("strata-kms-v1\n", key_id, "\n", version, "\n");
  for (const auto& [k, v] : context) {  // std::map: sorted, so the order is canonical.
    absl::StrAppend(&aad, k.size(), ":", k, "=", v.size(), ":", v, "\n");
  }
  return aad;
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

std::vector<std::string> AsList(const json& j) {
  std::vector<std::string> out;
  if (j.is_string()) out.push_back(j.get<std::string>());
  if (j.is_array()) {
    for (const json& e : j) {
      if (e.is_string()) out.push_back(e.get<std::string>());
    }
  }
  return out;
}

bool PrincipalMatches(const json& principal, const std::string& account) {
  std::vector<std::string> names;
  if (principal.is_string()) names = AsList(principal);
  if (principal.is_object() && principal.contains("AWS")) names = AsList(principal["AWS"]);
  for (const std::string& n : names) {
    if (n == "*" || n == account || n == absl::StrCat("arn:aws:iam::", account, ":root")) {
      return true;
    }
  }
  return false;
}

bool ActionMatches(const json& action, const std::string& operation) {
  for (const std::string& a : AsList(action)) {
    if (a == "*" || a == "kms:*" || a == operation) return true;
    if (absl::EndsWith(a, "*") && absl::StartsWith(operation, a.substr(0, a.size() - 1))) {
      return true;
    }
  }
  return false;
}

absl::Status ValidatePolicy(const std::string& policy) {
  json j = json::parse(policy, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object() || !j.contains("Statement") ||
      !(j["Statement"].is_array() || j["Statement"].is_object())) {
    return AwsError(absl::StatusCode::kInvalidArgument, "MalformedPolicyDocumentException",
                    "the key policy must be JSON with a Statement list");
  }
  return absl::OkStatus();
}

bool ValidAlias(const std::string& alias) {
  if (!absl::StartsWith(alias, "alias/") || alias.size() <= 6 || alias.size() > 256) return false;
  return alias.find_first_not_of(
             "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/_-") ==
         std::string::npos;
}

const std::vector<std::string>& GrantOperations() {
  static const auto* ops = new std::vector<std::string>{
      "Decrypt",       "Encrypt",     "GenerateDataKey", "GenerateDataKeyWithoutPlaintext",
      "ReEncryptFrom", "ReEncryptTo", "CreateGrant",     "RetireGrant",
      "DescribeKey"};
  return *ops;
}

}  // namespace

struct KmsImpl::Record {
  KmsKeyInfo info;
  std::string policy;
  std::vector<std::string> material;  // Wrapped, version i + 1 at index i.
  std::vector<KmsGrant> grants;
  uint64_t last_rotation_micros = 0;

  std::string Encode() const {
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
  static std::optional<Record> Decode(const std::string& bytes) {
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
};

KmsImpl::KmsImpl(KmsOptions options) : options_(std::move(options)) {}
KmsImpl::~KmsImpl() = default;

absl::StatusOr<std::unique_ptr<KmsImpl>> KmsImpl::Open(KmsOptions options) {
  if (!options.root_key.empty() && options.root_key.size() != kAeadKeyBytes) {
    return absl::InvalidArgumentError("the KMS root key must be 32 bytes");
  }
  std::unique_ptr<KmsImpl> kms(new KmsImpl(std::move(options)));
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> all =
      kms->options_.storage->LoadAll();
  if (!all.ok()) return all.status();
  absl::MutexLock lock(&kms->mu_);
  for (const auto& [key, value] : *all) {
    if (absl::StartsWith(key, "key/")) {
      std::optional<Record> r = Record::Decode(value);
      if (!r.has_value()) return absl::DataLossError(absl::StrCat("corrupt KMS record ", key));
      r->info.arn = kms->Arn(r->info.account, r->info.key_id);
      for (KmsGrant& g : r->grants) g.key_id = r->info.key_id;
      std::string id = r->info.key_id;
      kms->keys_[id] = std::make_unique<Record>(std::move(*r));
    } else if (absl::StartsWith(key, "alias/")) {
      // "alias/" account "/" alias-name
      const std::string rest = key.substr(6);
      const size_t slash = rest.find('/');
      if (slash == std::string::npos) continue;
      kms->aliases_[{rest.substr(0, slash), rest.substr(slash + 1)}] = value;
    }
  }
  return kms;
}

uint64_t KmsImpl::Now() const {
  if (options_.now_micros) return options_.now_micros();
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

std::string KmsImpl::Arn(const std::string& account, const std::string& key_id) const {
  return absl::StrCat("arn:aws:kms:", options_.region, ":", account, ":key/", key_id);
}

absl::Status KmsImpl::Save(const Record& key) {
  return options_.storage->Put(absl::StrCat("key/", key.info.key_id), key.Encode());
}

absl::Status KmsImpl::SaveAlias(const KmsAlias& alias) {
  return options_.storage->Put(absl::StrCat("alias/", alias.account, "/", alias.name),
                               alias.key_id);
}

void KmsImpl::Maintain() {
  const uint64_t now = Now();
  for (auto it = keys_.begin(); it != keys_.end();) {
    Record& r = *it->second;
    if (r.info.state == KmsKeyState::kPendingDeletion && now >= r.info.deletion_micros) {
      // Gone for good: ciphertexts under it can never be decrypted again, as on AWS.
      (void)options_.storage->Delete(absl::StrCat("key/", r.info.key_id));
      for (auto a = aliases_.begin(); a != aliases_.end();) {
        if (a->second == r.info.key_id) {
          (void)options_.storage->Delete(
              absl::StrCat("alias/", a->first.first, "/", a->first.second));
          a = aliases_.erase(a);
        } else {
          ++a;
        }
      }
      it = keys_.erase(it);
      continue;
    }
    if (r.info.rotation_enabled && r.info.state == KmsKeyState::kEnabled &&
        now >= r.last_rotation_micros + r.info.rotation_period_days * kDayMicros) {
      if (AddVersion(r).ok()) {
        r.info.rotation_micros.push_back(now);
        (void)Save(r);
      }
    }
    ++it;
  }
}

absl::StatusOr<KmsImpl::Record*> KmsImpl::Find(const std::string& caller,
                                               const std::string& key_ref) {
  Maintain();
  if (key_ref.empty()) return Invalid("a KeyId is required");
  std::string id = key_ref;
  std::string account = caller;
  if (absl::StartsWith(key_ref, "arn:aws:kms:")) {
    // arn:aws:kms:REGION:ACCOUNT:key/ID or :alias/NAME
    std::vector<std::string> parts = absl::StrSplit(key_ref, absl::MaxSplits(':', 5));
    if (parts.size() != 6) return NotFound(absl::StrCat("invalid key ARN ", key_ref));
    if (parts[3] != options_.region) {
      return NotFound(absl::StrCat(key_ref, " is not in region ", options_.region));
    }
    account = parts[4];
    id = parts[5];
    if (absl::StartsWith(id, "key/")) id = id.substr(4);
  }
  if (absl::StartsWith(id, "alias/")) {
    if (id == kEbsAlias && account == caller) {
      if (absl::Status s = EnsureEbsKey(account); !s.ok()) return s;
    }
    auto it = aliases_.find({account, id});
    if (it == aliases_.end()) return NotFound(absl::StrCat("Alias ", key_ref, " is not found."));
    id = it->second;
  }
  auto it = keys_.find(id);
  if (it == keys_.end() || it->second->info.account != account) {
    return NotFound(absl::StrCat("Key '", Arn(account, id), "' does not exist"));
  }
  return it->second.get();
}

absl::Status KmsImpl::EnsureEbsKey(const std::string& account) {
  if (aliases_.count({account, kEbsAlias}) > 0) return absl::OkStatus();
  absl::StatusOr<Record*> r =
      NewKey(account, "Default key that protects my EBS volumes when no other key is defined", {},
             "", "AWS");
  if (!r.ok()) return r.status();
  KmsAlias alias{kEbsAlias, (*r)->info.key_id, account};
  if (absl::Status s = SaveAlias(alias); !s.ok()) return s;
  aliases_[{account, kEbsAlias}] = alias.key_id;
  return absl::OkStatus();
}

absl::Status KmsImpl::Authorize(const std::string& caller, const Record& key,
                                const std::string& operation) const {
  json policy = json::parse(key.policy, nullptr, /*allow_exceptions=*/false);
  bool allowed = false;
  if (!policy.is_discarded() && policy.contains("Statement")) {
    json statements = policy["Statement"];
    if (statements.is_object()) statements = json::array({statements});
    for (const json& st : statements) {
      if (!st.is_object() || !st.contains("Principal") || !st.contains("Action")) continue;
      if (!PrincipalMatches(st["Principal"], caller) || !ActionMatches(st["Action"], operation)) {
        continue;
      }
      if (st.value("Effect", "") == "Deny") {
        return AwsError(absl::StatusCode::kPermissionDenied, "AccessDeniedException",
                        absl::StrCat("the key policy of ", key.info.arn, " denies ", operation,
                                     " to account ", caller));
      }
      if (st.value("Effect", "") == "Allow") allowed = true;
    }
  }
  const std::string bare = operation.substr(4);  // Without "kms:".
  for (const KmsGrant& g : key.grants) {
    if (g.grantee == caller && std::count(g.operations.begin(), g.operations.end(), bare) > 0) {
      allowed = true;
    }
  }
  if (!allowed) {
    return AwsError(
        absl::StatusCode::kPermissionDenied, "AccessDeniedException",
        absl::StrCat("account ", caller, " is not authorized to perform ", operation, " on ",
                     key.info.arn, " (no key policy statement or grant allows it)"));
  }
  return absl::OkStatus();
}

absl::Status KmsImpl::Usable(const Record& key) const {
  if (options_.root_key.empty()) {
    return AwsError(absl::StatusCode::kFailedPrecondition, "KMSInternalException",
                    "the KMS root key is not loaded (start stratad with --kms-root-key-file): "
                    "no key material can be unwrapped");
  }
  switch (key.info.state) {
    case KmsKeyState::kEnabled:
      return absl::OkStatus();
    case KmsKeyState::kDisabled:
      return AwsError(absl::StatusCode::kFailedPrecondition, "DisabledException",
                      absl::StrCat(key.info.arn, " is disabled."));
    case KmsKeyState::kPendingDeletion:
      return AwsError(absl::StatusCode::kFailedPrecondition, "KMSInvalidStateException",
                      absl::StrCat(key.info.arn, " is pending deletion."));
  }
  return absl::OkStatus();
}

absl::Status KmsImpl::AddVersion(Record& key) {
  if (options_.root_key.empty()) return Usable(key);
  const SecretBytes material = RandomSecret(kAeadKeyBytes);
  const uint32_t version = static_cast<uint32_t>(key.material.size()) + 1;
  key.material.push_back(
      Seal(options_.root_key, material.str(), MaterialAad(key.info.key_id, version)));
  key.last_rotation_micros = Now();
  return absl::OkStatus();
}

absl::StatusOr<SecretBytes> KmsImpl::Material(const Record& key, uint32_t version) const {
  if (version == 0 || version > key.material.size()) {
    return AwsError(absl::StatusCode::kDataLoss, "InvalidCiphertextException",
                    absl::StrCat("ciphertext names version ", version, " of ", key.info.arn,
                                 ", which does not exist"));
  }
  absl::StatusOr<SecretBytes> m = crypto::Open(options_.root_key, key.material[version - 1],
                                               MaterialAad(key.info.key_id, version));
  if (!m.ok()) {
    return AwsError(
        absl::StatusCode::kDataLoss, "KMSInternalException",
        absl::StrCat("the key material of ", key.info.arn,
                     " does not unwrap: wrong root key, or the key store was tampered with"));
  }
  return m;
}

absl::StatusOr<KmsImpl::Record*> KmsImpl::NewKey(const std::string& account,
                                                 const std::string& description,
                                                 const std::map<std::string, std::string>& tags,
                                                 const std::string& policy,
                                                 const std::string& manager) {
  if (options_.root_key.empty()) {
    return AwsError(absl::StatusCode::kFailedPrecondition, "KMSInternalException",
                    "the KMS root key is not loaded (start stratad with --kms-root-key-file)");
  }
  if (!policy.empty()) {
    if (absl::Status s = ValidatePolicy(policy); !s.ok()) return s;
  }
  if (description.size() > 8192) return Invalid("Description is longer than 8192 characters");
  auto r = std::make_unique<Record>();
  r->info.key_id = NewUuid();
  r->info.account = account;
  r->info.arn = Arn(account, r->info.key_id);
  r->info.description = description;
  r->info.manager = manager;
  r->info.creation_micros = Now();
  r->info.tags = tags;
  r->info.rotation_enabled = manager == "AWS";  // AWS managed keys rotate yearly.
  r->policy = policy.empty() ? DefaultPolicy(account) : policy;
  if (absl::Status s = AddVersion(*r); !s.ok()) return s;
  if (absl::Status s = Save(*r); !s.ok()) return s;
  Record* raw = r.get();
  keys_[r->info.key_id] = std::move(r);
  return raw;
}

absl::StatusOr<KmsKeyInfo> KmsImpl::CreateKey(const std::string& caller,
                                              const std::string& description,
                                              const std::map<std::string, std::string>& tags,
                                              const std::string& policy) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Record*> r = NewKey(caller, description, tags, policy, "CUSTOMER");
  if (!r.ok()) return r.status();
  return (*r)->info;
}

absl::StatusOr<KmsKeyInfo> KmsImpl::DescribeKey(const std::string& caller,
                                                const std::string& key_ref) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Record*> r = Find(caller, key_ref);
  if (!r.ok()) return r.status();
  if (absl::Status s = Authorize(caller, **r, "kms:DescribeKey"); !s.ok()) return s;
  return (*r)->info;
}

absl::StatusOr<std::vector<KmsKeyInfo>> KmsImpl::ListKeys(const std::string& caller) {
  absl::MutexLock lock(&mu_);
  Maintain();
  std::vector<KmsKeyInfo> out;
  for (const auto& [id, r] : keys_) {
    if (r->info.account == caller) out.push_back(r->info);
  }
  return out;
}

absl::Status KmsImpl::SetState(const std::string& caller, const std::string& key_ref,
                               KmsKeyState state, const std::string& operation,
                               uint64_t deletion_micros) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Record*> r = Find(caller, key_ref);
  if (!r.ok()) return r.status();
  if (absl::Status s = Authorize(caller, **r, operation); !s.ok()) return s;
  if ((*r)->info.manager == "AWS") {
    return AwsError(absl::StatusCode::kPermissionDenied, "AccessDeniedException",
                    "AWS managed keys cannot be disabled or deleted");
  }
  if ((*r)->info.state == KmsKeyState::kPendingDeletion) {
    return AwsError(absl::StatusCode::kFailedPrecondition, "KMSInvalidStateException",
                    absl::StrCat((*r)->info.arn, " is pending deletion."));
  }
  (*r)->info.state = state;
  (*r)->info.deletion_micros = deletion_micros;
  return Save(**r);
}

absl::Status KmsImpl::EnableKey(const std::string& caller, const std::string& key_ref) {
  return SetState(caller, key_ref, KmsKeyState::kEnabled, "kms:EnableKey", 0);
}

absl::Status KmsImpl::DisableKey(const std::string& caller, const std::string& key_ref) {
  return SetState(caller, key_ref, KmsKeyState::kDisabled, "kms:DisableKey", 0);
}

absl::StatusOr<uint64_t> KmsImpl::ScheduleKeyDeletion(const std::string& caller,
                                                      const std::string& key_ref,
                                                      int pending_days) {
  if (pending_days < 7 || pending_days > 30) {
    return Invalid("PendingWindowInDays must be between 7 and 30");
  }
  const uint64_t when = Now() + pending_days * kDayMicros;
  if (absl::Status s =
          SetState(caller, key_ref, KmsKeyState::kPendingDeletion, "kms:ScheduleKeyDeletion", when);
      !s.ok()) {
    return s;
  }
  return when;
}

absl::Status KmsImpl::CancelKeyDeletion(const std::string& caller, const std::string& key_ref) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Record*> r = Find(caller, key_ref);
  if (!r.ok()) return r.status();
  if (absl::Status s = Authorize(caller, **r, "kms:CancelKeyDeletion"); !s.ok()) return s;
  if ((*r)->info.state != KmsKeyState::kPendingDeletion) {
    return AwsError(absl::StatusCode::kFailedPrecondition, "KMSInvalidStateException",
                    absl::StrCat((*r)->info.arn, " is not pending deletion."));
  }
  (*r)->info.state = KmsKeyState::kDisabled;
  (*r)->info.deletion_micros = 0;
  return Save(**r);
}

absl::Status KmsImpl::SetKeyRotation(const std::string& caller, const std::string& key_ref,
                                     bool enabled, int period_days) {
  if (enabled && (period_days < 90 || period_days > 2560)) {
    return Invalid("RotationPeriodInDays must be between 90 and 2560");
  }
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Record*> r = Find(caller, key_ref);
  if (!r.ok()) return r.status();
  if (absl::Status s =
          Authorize(caller, **r, enabled ? "kms:EnableKeyRotation" : "kms:DisableKeyRotation");
      !s.ok()) {
    return s;
  }
  if (absl::Status s = Usable(**r); !s.ok()) return s;
  (*r)->info.rotation_enabled = enabled;
  if (enabled) (*r)->info.rotation_period_days = static_cast<uint32_t>(period_days);
  return Save(**r);
}

absl::Status KmsImpl::RotateKeyOnDemand(const std::string& caller, const std::string& key_ref) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Record*> r = Find(caller, key_ref);
  if (!r.ok()) return r.status();
  if (absl::Status s = Authorize(caller, **r, "kms:RotateKeyOnDemand"); !s.ok()) return s;
  if (absl::Status s = Usable(**r); !s.ok()) return s;
  if (absl::Status s = AddVersion(**r); !s.ok()) return s;
  (*r)->info.rotation_micros.push_back(Now());
  return Save(**r);
}

absl::Status KmsImpl::CreateAlias(const std::string& caller, const std::string& alias,
                                  const std::string& key_ref) {
  if (!ValidAlias(alias) || absl::StartsWith(alias, "alias/aws/")) {
    return Invalid(absl::StrCat("alias name \"", alias,
                                "\" must be alias/ and letters, digits, / _ - (alias/aws/ is "
                                "reserved)"));
  }
  absl::MutexLock lock(&mu_);
  if (aliases_.count({caller, alias}) > 0) {
    return AwsError(absl::StatusCode::kAlreadyExists, "AlreadyExistsException",
                    absl::StrCat("An alias with the name ", alias, " already exists"));
  }
  absl::StatusOr<Record*> r = Find(caller, key_ref);
  if (!r.ok()) return r.status();
  if ((*r)->info.account != caller) return NotFound("aliases name keys of the same account");
  if (absl::Status s = Authorize(caller, **r, "kms:CreateAlias"); !s.ok()) return s;
  KmsAlias a{alias, (*r)->info.key_id, caller};
  if (absl::Status s = SaveAlias(a); !s.ok()) return s;
  aliases_[{caller, alias}] = a.key_id;
  return absl::OkStatus();
}

absl::Status KmsImpl::UpdateAlias(const std::string& caller, const std::string& alias,
                                  const std::string& key_ref) {
  absl::MutexLock lock(&mu_);
  auto it = aliases_.find({caller, alias});
  if (it == aliases_.end() || absl::StartsWith(alias, "alias/aws/")) {
    return NotFound(absl::StrCat("Alias ", alias, " is not found."));
  }
  absl::StatusOr<Record*> r = Find(caller, key_ref);
  if (!r.ok()) return r.status();
  if ((*r)->info.account != caller) return NotFound("aliases name keys of the same account");
  if (absl::Status s = Authorize(caller, **r, "kms:UpdateAlias"); !s.ok()) return s;
  KmsAlias a{alias, (*r)->info.key_id, caller};
  if (absl::Status s = SaveAlias(a); !s.ok()) return s;
  it->second = a.key_id;
  return absl::OkStatus();
}

absl::Status KmsImpl::DeleteAlias(const std::string& caller, const std::string& alias) {
  absl::MutexLock lock(&mu_);
  auto it = aliases_.find({caller, alias});
  if (it == aliases_.end() || absl::StartsWith(alias, "alias/aws/")) {
    return NotFound(absl::StrCat("Alias ", alias, " is not found."));
  }
  if (absl::Status s = options_.storage->Delete(absl::StrCat("alias/", caller, "/", alias));
      !s.ok()) {
    return s;
  }
  aliases_.erase(it);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<KmsAlias>> KmsImpl::ListAliases(const std::string& caller,
                                                           const std::string& key_ref) {
  absl::MutexLock lock(&mu_);
  std::string only;
  if (!key_ref.empty()) {
    absl::StatusOr<Record*> r = Find(caller, key_ref);
    if (!r.ok()) return r.status();
    only = (*r)->info.key_id;
  } else {
    Maintain();
  }
  std::vector<KmsAlias> out;
  for (const auto& [name, key_id] : aliases_) {
    if (name.first == caller && (only.empty() || key_id == only)) {
      out.push_back({name.second, key_id, caller});
    }
  }
  return out;
}

absl::Status KmsImpl::PutKeyPolicy(const std::string& caller, const std::string& key_ref,
                                   const std::string& policy) {
  if (absl::Status s = ValidatePolicy(policy); !s.ok()) return s;
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Record*> r = Find(caller, key_ref);
  if (!r.ok()) return r.status();
  if (absl::Status s = Authorize(caller, **r, "kms:PutKeyPolicy"); !s.ok()) return s;
  (*r)->policy = policy;
  return Save(**r);
}

absl::StatusOr<std::string> KmsImpl::GetKeyPolicy(const std::string& caller,
                                                  const std::string& key_ref) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Record*> r = Find(caller, key_ref);
  if (!r.ok()) return r.status();
  if (absl::Status s = Authorize(caller, **r, "kms:GetKeyPolicy"); !s.ok()) return s;
  return (*r)->policy;
}

absl::StatusOr<KmsGrant> KmsImpl::CreateGrant(const std::string& caller, const std::string& key_ref,
                                              const std::string& grantee,
                                              const std::vector<std::string>& operations,
                                              const std::string& retiring,
                                              const std::string& name) {
  if (grantee.empty()) return Invalid("GranteePrincipal is required");
  if (operations.empty()) return Invalid("Operations is required");
  for (const std::string& op : operations) {
    if (std::count(GrantOperations().begin(), GrantOperations().end(), op) == 0) {
      return Invalid(absl::StrCat("unknown grant operation ", op));
    }
  }
  auto account_of = [](const std::string& principal) {
    // An account id, or arn:aws:iam::ACCOUNT:root.
    if (absl::StartsWith(principal, "arn:aws:iam::")) {
      const std::string rest = principal.substr(13);
      return rest.substr(0, rest.find(':'));
    }
    return principal;
  };
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Record*> r = Find(caller, key_ref);
  if (!r.ok()) return r.status();
  if (absl::Status s = Authorize(caller, **r, "kms:CreateGrant"); !s.ok()) return s;
  if (absl::Status s = Usable(**r); !s.ok()) return s;
  KmsGrant g;
  g.grant_id = absl::BytesToHexString(RandomBytes(32));
  g.grant_token = absl::StrCat("gt-", absl::BytesToHexString(RandomBytes(32)));
  g.key_id = (*r)->info.key_id;
  g.name = name;
  g.grantee = account_of(grantee);
  g.retiring = retiring.empty() ? "" : account_of(retiring);
  g.issuing_account = caller;
  g.operations = operations;
  g.creation_micros = Now();
  (*r)->grants.push_back(g);
  if (absl::Status s = Save(**r); !s.ok()) {
    (*r)->grants.pop_back();
    return s;
  }
  return g;
}

absl::StatusOr<std::vector<KmsGrant>> KmsImpl::ListGrants(const std::string& caller,
                                                          const std::string& key_ref) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Record*> r = Find(caller, key_ref);
  if (!r.ok()) return r.status();
  if (absl::Status s = Authorize(caller, **r, "kms:ListGrants"); !s.ok()) return s;
  return (*r)->grants;
}

absl::Status KmsImpl::RetireGrant(const std::string& caller, const std::string& grant_token,
                                  const std::string& key_ref, const std::string& grant_id) {
  absl::MutexLock lock(&mu_);
  Maintain();
  for (auto& [id, r] : keys_) {
    if (!key_ref.empty() && r->info.key_id != key_ref && r->info.arn != key_ref) continue;
    for (auto g = r->grants.begin(); g != r->grants.end(); ++g) {
      if (!(grant_token.empty() ? g->grant_id == grant_id : g->grant_token == grant_token))
        continue;
      if (caller != g->grantee && caller != g->retiring && caller != r->info.account) {
        return AwsError(absl::StatusCode::kPermissionDenied, "AccessDeniedException",
                        absl::StrCat("account ", caller, " may not retire this grant"));
      }
      r->grants.erase(g);
      return Save(*r);
    }
  }
  return NotFound("no such grant");
}

absl::Status KmsImpl::RevokeGrant(const std::string& caller, const std::string& key_ref,
                                  const std::string& grant_id) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Record*> r = Find(caller, key_ref);
  if (!r.ok()) return r.status();
  if (absl::Status s = Authorize(caller, **r, "kms:RevokeGrant"); !s.ok()) return s;
  auto& grants = (*r)->grants;
  auto it = std::find_if(grants.begin(), grants.end(),
                         [&](const KmsGrant& g) { return g.grant_id == grant_id; });
  if (it == grants.end()) return NotFound(absl::StrCat("grant ", grant_id, " is not found"));
  grants.erase(it);
  return Save(**r);
}

absl::StatusOr<std::string> KmsImpl::EncryptLocked(const std::string& caller,
                                                   const std::string& key_ref,
                                                   const SecretBytes& plaintext,
                                                   const EncryptionContext& context,
                                                   const std::string& operation) {
  absl::StatusOr<Record*> r = Find(caller, key_ref);
  if (!r.ok()) return r.status();
  if (absl::Status s = Authorize(caller, **r, operation); !s.ok()) return s;
  if (absl::Status s = Usable(**r); !s.ok()) return s;
  const uint32_t version = static_cast<uint32_t>((*r)->material.size());
  absl::StatusOr<SecretBytes> material = Material(**r, version);
  if (!material.ok()) return material.status();
  std::string blob = kBlobMagic;
  blob += (*r)->info.key_id;
  for (int i = 3; i >= 0; --i) blob.push_back(static_cast<char>(version >> (8 * i)));
  blob += Seal(*material, plaintext.str(), BlobAad((*r)->info.key_id, version, context));
  return blob;
}

absl::StatusOr<Decrypted> KmsImpl::DecryptLocked(const std::string& caller,
                                                 const std::string& ciphertext,
                                                 const EncryptionContext& context,
                                                 const std::string& key_ref,
                                                 const std::string& operation) {
  if (ciphertext.size() < kBlobHeaderBytes + kAeadOverheadBytes ||
      ciphertext.compare(0, 4, kBlobMagic) != 0) {
    return AwsError(absl::StatusCode::kDataLoss, "InvalidCiphertextException",
                    "the ciphertext is not a Strata KMS ciphertext blob");
  }
  const std::string key_id = ciphertext.substr(4, kKeyIdBytes);
  uint32_t version = 0;
  for (int i = 0; i < 4; ++i) {
    version = (version << 8) | static_cast<uint8_t>(ciphertext[4 + kKeyIdBytes + i]);
  }
  // The blob names the key; its owner's account is looked up rather than assumed.
  auto it = keys_.find(key_id);
  if (it == keys_.end()) {
    Maintain();
    return AwsError(absl::StatusCode::kNotFound, "NotFoundException",
                    absl::StrCat("the key of this ciphertext (", key_id, ") does not exist"));
  }
  Record& key = *it->second;
  if (!key_ref.empty()) {
    absl::StatusOr<Record*> named = Find(caller, key_ref);
    if (!named.ok()) return named.status();
    if (*named != &key) {
      return AwsError(absl::StatusCode::kInvalidArgument, "IncorrectKeyException",
                      "the ciphertext was not made with the KeyId given");
    }
  }
  Maintain();
  if (keys_.find(key_id) == keys_.end()) return NotFound("the key of this ciphertext is gone");
  if (absl::Status s = Authorize(caller, key, operation); !s.ok()) return s;
  if (absl::Status s = Usable(key); !s.ok()) return s;
  absl::StatusOr<SecretBytes> material = Material(key, version);
  if (!material.ok()) return material.status();
  absl::StatusOr<SecretBytes> plain =
      crypto::Open(*material, absl::string_view(ciphertext).substr(kBlobHeaderBytes),
                   BlobAad(key_id, version, context));
  if (!plain.ok()) {
    return AwsError(absl::StatusCode::kDataLoss, "InvalidCiphertextException",
                    "the ciphertext does not authenticate: it was altered, or the encryption "
                    "context differs from the one it was made with");
  }
  return Decrypted{std::move(*plain), key.info.arn};
}

absl::StatusOr<std::string> KmsImpl::Encrypt(const std::string& caller, const std::string& key_ref,
                                             const SecretBytes& plaintext,
                                             const EncryptionContext& context) {
  if (plaintext.empty() || plaintext.size() > 4096) {
    return Invalid("Plaintext must be 1 to 4096 bytes");
  }
  absl::MutexLock lock(&mu_);
  return EncryptLocked(caller, key_ref, plaintext, context, "kms:Encrypt");
}

absl::StatusOr<Decrypted> KmsImpl::Decrypt(const std::string& caller, const std::string& ciphertext,
                                           const EncryptionContext& context,
                                           const std::string& key_ref) {
  absl::MutexLock lock(&mu_);
  return DecryptLocked(caller, ciphertext, context, key_ref, "kms:Decrypt");
}

absl::StatusOr<std::string> KmsImpl::ReEncrypt(const std::string& caller,
                                               const std::string& ciphertext,
                                               const EncryptionContext& source_context,
                                               const std::string& destination_key_ref,
                                               const EncryptionContext& destination_context) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Decrypted> plain =
      DecryptLocked(caller, ciphertext, source_context, "", "kms:ReEncryptFrom");
  if (!plain.ok()) return plain.status();
  return EncryptLocked(caller, destination_key_ref, plain->plaintext, destination_context,
                       "kms:ReEncryptTo");
}

absl::StatusOr<DataKey> KmsImpl::GenerateDataKey(const std::string& caller,
                                                 const std::string& key_ref, size_t bytes,
                                                 const EncryptionContext& context) {
  if (bytes == 0 || bytes > 1024) return Invalid("NumberOfBytes must be 1 to 1024");
  absl::MutexLock lock(&mu_);
  DataKey key;
  key.plaintext = RandomSecret(bytes);
  absl::StatusOr<std::string> blob =
      EncryptLocked(caller, key_ref, key.plaintext, context, "kms:GenerateDataKey");
  if (!blob.ok()) return blob.status();
  key.ciphertext = std::move(*blob);
  key.key_arn = keys_.at(key.ciphertext.substr(4, kKeyIdBytes))->info.arn;
  return key;
}

absl::Status KmsImpl::CheckUsable(const std::string& caller, const std::string& key_ref) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Record*> r = Find(caller, key_ref);
  if (!r.ok()) return r.status();
  if (absl::Status s = Authorize(caller, **r, "kms:Decrypt"); !s.ok()) return s;
  return Usable(**r);
}

absl::StatusOr<KmsKeyInfo> KmsImpl::DefaultEbsKey(const std::string& account) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Record*> r = Find(account, kEbsAlias);
  if (!r.ok()) return r.status();
  return (*r)->info;
}

}  // namespace crypto
}  // namespace strata
