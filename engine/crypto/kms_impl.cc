// The KMS: opening its records, storing them, finding keys by id, ARN or alias, and the key
// lifecycle (create, describe, enable, disable, deletion windows, rotation). Aliases, policies
// and grants are in kms_access.cc; the cryptographic operations in kms_crypto_ops.cc.

#include "crypto/kms_impl.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "crypto/aead.h"
#include "crypto/kms_internal.h"
#include "nlohmann/json.hpp"
#include "strata/aws_error.h"
#include "util/status_macros.h"

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
using kms::DefaultPolicy;
using kms::Invalid;
using kms::MaterialAad;
using kms::NewUuid;
using kms::NotFound;

constexpr uint64_t kDayMicros = 86400ull * 1000000;
constexpr char kEbsAlias[] = "alias/aws/ebs";

}  // namespace

KmsImpl::KmsImpl(KmsOptions options) : options_(std::move(options)) {}
KmsImpl::~KmsImpl() = default;

absl::StatusOr<std::unique_ptr<KmsImpl>> KmsImpl::Open(KmsOptions options) {
  if (!options.root_key.empty() && options.root_key.size() != kAeadKeyBytes) {
    return absl::InvalidArgumentError("the KMS root key must be 32 bytes");
  }
  std::unique_ptr<KmsImpl> kms(new KmsImpl(std::move(options)));
  STRATA_RETURN_IF_ERROR(kms->Load());
  return kms;
}

util::SharedSection& KmsImpl::Section() const {
  return options_.shared != nullptr ? *options_.shared : util::SoleProcess();
}

absl::Status KmsImpl::Load() {
  const uint64_t changes = Section().foreign_changes();
  STRATA_ASSIGN_OR_RETURN(auto all, options_.storage->LoadAll());
  std::map<std::string, std::unique_ptr<Record>> keys;
  std::map<std::pair<std::string, std::string>, std::string> aliases;
  for (const auto& [key, value] : all) {
    if (absl::StartsWith(key, "key/")) {
      std::optional<Record> r = Record::Decode(value);
      if (!r.has_value()) return absl::DataLossError(absl::StrCat("corrupt KMS record ", key));
      r->info.arn = Arn(r->info.account, r->info.key_id);
      for (KmsGrant& g : r->grants) g.key_id = r->info.key_id;
      std::string id = r->info.key_id;
      keys[id] = std::make_unique<Record>(std::move(*r));
    } else if (absl::StartsWith(key, "alias/")) {
      // "alias/" account "/" alias-name
      const std::string rest = key.substr(6);
      const size_t slash = rest.find('/');
      if (slash == std::string::npos) continue;
      aliases[{rest.substr(0, slash), rest.substr(slash + 1)}] = value;
    }
  }
  absl::MutexLock lock(&mu_);
  keys_ = std::move(keys);
  aliases_ = std::move(aliases);
  loaded_changes_ = changes;
  return absl::OkStatus();
}

absl::StatusOr<util::SharedHold> KmsImpl::EnterShared() {
  util::SharedSection& shared = Section();
  STRATA_ASSIGN_OR_RETURN(util::SharedHold held, shared.Enter());
  bool stale = false;
  {
    absl::MutexLock lock(&mu_);
    stale = loaded_changes_ != shared.foreign_changes();
  }
  if (stale) STRATA_RETURN_IF_ERROR(Load());
  return held;
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
    if (absl::Status s = kms::ValidatePolicy(policy); !s.ok()) return s;
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
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, EnterShared());
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Record*> r = NewKey(caller, description, tags, policy, "CUSTOMER");
  if (!r.ok()) return r.status();
  return (*r)->info;
}

absl::StatusOr<KmsKeyInfo> KmsImpl::DescribeKey(const std::string& caller,
                                                const std::string& key_ref) {
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, EnterShared());
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Record*> r = Find(caller, key_ref);
  if (!r.ok()) return r.status();
  if (absl::Status s = Authorize(caller, **r, "kms:DescribeKey"); !s.ok()) return s;
  return (*r)->info;
}

absl::StatusOr<std::vector<KmsKeyInfo>> KmsImpl::ListKeys(const std::string& caller) {
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, EnterShared());
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
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, EnterShared());
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
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, EnterShared());
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
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, EnterShared());
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
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, EnterShared());
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Record*> r = Find(caller, key_ref);
  if (!r.ok()) return r.status();
  if (absl::Status s = Authorize(caller, **r, "kms:RotateKeyOnDemand"); !s.ok()) return s;
  if (absl::Status s = Usable(**r); !s.ok()) return s;
  if (absl::Status s = AddVersion(**r); !s.ok()) return s;
  (*r)->info.rotation_micros.push_back(Now());
  return Save(**r);
}

absl::Status KmsImpl::CheckUsable(const std::string& caller, const std::string& key_ref) {
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, EnterShared());
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Record*> r = Find(caller, key_ref);
  if (!r.ok()) return r.status();
  if (absl::Status s = Authorize(caller, **r, "kms:Decrypt"); !s.ok()) return s;
  return Usable(**r);
}

absl::StatusOr<KmsKeyInfo> KmsImpl::DefaultEbsKey(const std::string& account) {
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, EnterShared());
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Record*> r = Find(account, kEbsAlias);
  if (!r.ok()) return r.status();
  return (*r)->info;
}

}  // namespace crypto
}  // namespace strata
