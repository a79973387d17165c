// The KMS's access rules: aliases, key policies (Allow/Deny statements by principal and
// action), grants, and Authorize, which every operation on a key passes.

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

namespace strata::crypto {
namespace {

using json = nlohmann::json;
using kms::Invalid;
using kms::NotFound;

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

}  // namespace

absl::Status kms::ValidatePolicy(const std::string& policy) {
  json j = json::parse(policy, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object() || !j.contains("Statement") ||
      !(j["Statement"].is_array() || j["Statement"].is_object())) {
    return AwsError(absl::StatusCode::kInvalidArgument, "MalformedPolicyDocumentException",
                    "the key policy must be JSON with a Statement list");
  }
  return absl::OkStatus();
}

namespace {

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

absl::Status KmsImpl::CreateAlias(const std::string& caller, const std::string& alias,
                                  const std::string& key_ref) {
  if (!ValidAlias(alias) || absl::StartsWith(alias, "alias/aws/")) {
    return Invalid(absl::StrCat("alias name \"", alias,
                                "\" must be alias/ and letters, digits, / _ - (alias/aws/ is "
                                "reserved)"));
  }
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, EnterShared());
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
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, EnterShared());
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
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, EnterShared());
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
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, EnterShared());
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
  if (absl::Status s = kms::ValidatePolicy(policy); !s.ok()) return s;
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, EnterShared());
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Record*> r = Find(caller, key_ref);
  if (!r.ok()) return r.status();
  if (absl::Status s = Authorize(caller, **r, "kms:PutKeyPolicy"); !s.ok()) return s;
  (*r)->policy = policy;
  return Save(**r);
}

absl::StatusOr<std::string> KmsImpl::GetKeyPolicy(const std::string& caller,
                                                  const std::string& key_ref) {
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, EnterShared());
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
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, EnterShared());
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
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, EnterShared());
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Record*> r = Find(caller, key_ref);
  if (!r.ok()) return r.status();
  if (absl::Status s = Authorize(caller, **r, "kms:ListGrants"); !s.ok()) return s;
  return (*r)->grants;
}

absl::Status KmsImpl::RetireGrant(const std::string& caller, const std::string& grant_token,
                                  const std::string& key_ref, const std::string& grant_id) {
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, EnterShared());
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
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, EnterShared());
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

}  // namespace strata::crypto
