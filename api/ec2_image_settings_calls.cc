// The EC2 calls about an account's image settings (image block public access, allowed images)
// and an image's deregistration protection and deprecation.

#include <algorithm>
#include <functional>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "ec2_image_call_base.h"

namespace strata::api {
namespace {

class ImageSettingsCalls : public ImageCallBase {
 public:
  explicit ImageSettingsCalls(const Ec2CallContext& c) : ImageCallBase(c) {}

  std::optional<Result> Run(const std::string& action) {
    static const std::map<std::string, Result (ImageSettingsCalls::*)()> kActions = {
        {"EnableImageBlockPublicAccess", &ImageSettingsCalls::EnableImageBlockPublicAccess},
        {"DisableImageBlockPublicAccess", &ImageSettingsCalls::DisableImageBlockPublicAccess},
        {"GetImageBlockPublicAccessState", &ImageSettingsCalls::GetImageBlockPublicAccessState},
        {"EnableAllowedImagesSettings", &ImageSettingsCalls::EnableAllowedImagesSettings},
        {"DisableAllowedImagesSettings", &ImageSettingsCalls::DisableAllowedImagesSettings},
        {"GetAllowedImagesSettings", &ImageSettingsCalls::GetAllowedImagesSettings},
        {"ReplaceImageCriteriaInAllowedImagesSettings",
         &ImageSettingsCalls::ReplaceImageCriteriaInAllowedImagesSettings},
        {"EnableImageDeregistrationProtection",
         &ImageSettingsCalls::EnableImageDeregistrationProtection},
        {"DisableImageDeregistrationProtection",
         &ImageSettingsCalls::DisableImageDeregistrationProtection},
        {"EnableImageDeprecation", &ImageSettingsCalls::EnableImageDeprecation},
        {"DisableImageDeprecation", &ImageSettingsCalls::DisableImageDeprecation},
    };
    return Dispatch(*this, kActions, action);
  }

 private:
  Result ChangeSettings(const std::function<absl::Status(ImageSettings&)>& change,
                        const std::function<void(const ImageSettings&)>& write) {
    absl::StatusOr<ImageSettings> settings = images_.GetSettings(account_.id);
    if (!settings.ok()) return Fail(settings.status());
    if (absl::Status s = change(*settings); !s.ok()) return Fail(s);
    if (absl::Status s = images_.SetSettings(account_.id, *settings); !s.ok()) return Fail(s);
    write(*settings);
    return x_.Finish();
  }
  static const char* BpaState(const ImageSettings& s) {
    return s.block_public_access ? "block-new-sharing" : "unblocked";
  }

  Result EnableImageBlockPublicAccess() {
    const std::string state = p_.GetOr("ImageBlockPublicAccessState", "");
    if (state != "block-new-sharing") {
      return Invalid("ImageBlockPublicAccessState must be block-new-sharing");
    }
    return ChangeSettings(
        [](ImageSettings& s) {
          s.block_public_access = true;
          return absl::OkStatus();
        },
        [&](const ImageSettings& s) { x_.Text("imageBlockPublicAccessState", BpaState(s)); });
  }
  Result DisableImageBlockPublicAccess() {
    return ChangeSettings(
        [](ImageSettings& s) {
          s.block_public_access = false;
          return absl::OkStatus();
        },
        [&](const ImageSettings& s) { x_.Text("imageBlockPublicAccessState", BpaState(s)); });
  }
  Result GetImageBlockPublicAccessState() {
    absl::StatusOr<ImageSettings> settings = images_.GetSettings(account_.id);
    if (!settings.ok()) return Fail(settings.status());
    x_.Text("imageBlockPublicAccessState", BpaState(*settings));
    x_.Text("managedBy", "account");
    return x_.Finish();
  }

  Result EnableAllowedImagesSettings() {
    const std::string state = p_.GetOr("AllowedImagesSettingsState", "");
    if (state != "enabled" && state != "audit-mode") {
      return Invalid("AllowedImagesSettingsState must be enabled or audit-mode");
    }
    return ChangeSettings(
        [&](ImageSettings& s) {
          s.allowed_images_state = state;
          return absl::OkStatus();
        },
        [&](const ImageSettings& s) {
          x_.Text("allowedImagesSettingsState", s.allowed_images_state);
        });
  }
  Result DisableAllowedImagesSettings() {
    return ChangeSettings(
        [](ImageSettings& s) {
          s.allowed_images_state = "disabled";
          return absl::OkStatus();
        },
        [&](const ImageSettings& s) {
          x_.Text("allowedImagesSettingsState", s.allowed_images_state);
        });
  }
  Result GetAllowedImagesSettings() {
    absl::StatusOr<ImageSettings> settings = images_.GetSettings(account_.id);
    if (!settings.ok()) return Fail(settings.status());
    x_.Text("state", settings->allowed_images_state);
    x_.Open("imageCriterionSet");
    for (const std::vector<std::string>& criterion : settings->image_criteria) {
      x_.Open("item");
      x_.Open("imageProviderSet");
      for (const std::string& p : criterion) x_.Text("item", p);
      x_.Close();
      x_.Close();
    }
    x_.Close();
    x_.Text("managedBy", "account");
    return x_.Finish();
  }
  Result ReplaceImageCriteriaInAllowedImagesSettings() {
    std::vector<std::vector<std::string>> criteria;
    for (const std::string& c : p_.StructList("ImageCriterion")) {
      criteria.push_back(p_.List(c + "ImageProvider"));
    }
    return ChangeSettings(
        [&](ImageSettings& s) {
          s.image_criteria = criteria;
          return absl::OkStatus();
        },
        [&](const ImageSettings&) { x_.Bool("return", true); });
  }

  // ---- Protection and deprecation ----

  Result UpdateOwned(const std::function<absl::Status(ImageInfo&)>& change,
                     const std::function<void(const ImageInfo&)>& write) {
    const std::string id = p_.GetOr("ImageId", "");
    absl::StatusOr<ImageInfo> image = OwnedImage(id);
    if (!image.ok()) return Fail(image.status());
    absl::StatusOr<ImageInfo> updated = images_.UpdateImage(id, change);
    if (!updated.ok()) return Fail(updated.status());
    write(*updated);
    return x_.Finish();
  }

  Result EnableImageDeregistrationProtection() {
    absl::StatusOr<std::optional<bool>> cooldown = p_.GetBool("WithCooldown");
    if (!cooldown.ok()) return Invalid(std::string(cooldown.status().message()));
    return UpdateOwned(
        [&](ImageInfo& i) {
          i.deregistration_protection = true;
          i.protection_cooldown = cooldown->value_or(false);
          return absl::OkStatus();
        },
        [&](const ImageInfo& i) { x_.Text("return", ProtectionName(i)); });
  }
  Result DisableImageDeregistrationProtection() {
    return UpdateOwned(
        [&](ImageInfo& i) {
          // With the cooldown, the image stays protected for 24 hours after this.
          if (i.deregistration_protection && i.protection_cooldown) {
            i.protected_until_micros = NowMicros() + kDayMicros;
          }
          i.deregistration_protection = false;
          i.protection_cooldown = false;
          return absl::OkStatus();
        },
        [&](const ImageInfo& i) { x_.Text("return", ProtectionName(i)); });
  }
  Result EnableImageDeprecation() {
    const std::string at = p_.GetOr("DeprecateAt", "");
    if (at.empty()) return Missing("DeprecateAt");
    absl::StatusOr<uint64_t> micros = ParseIsoTime(at);
    if (!micros.ok()) return Invalid(std::string(micros.status().message()));
    if (*micros > NowMicros() + 10 * 365 * kDayMicros) {
      return Invalid("DeprecateAt is at most 10 years from now");
    }
    // Rounded down to the minute, as AWS does.
    const uint64_t when = *micros / 60000000 * 60000000;
    return UpdateOwned(
        [&](ImageInfo& i) {
          i.deprecation_micros = when;
          return absl::OkStatus();
        },
        [&](const ImageInfo&) { x_.Bool("return", true); });
  }
  Result DisableImageDeprecation() {
    return UpdateOwned(
        [](ImageInfo& i) {
          i.deprecation_micros = 0;
          return absl::OkStatus();
        },
        [&](const ImageInfo&) { x_.Bool("return", true); });
  }
};

}  // namespace

std::optional<Result> RunImageSettingsCall(const Ec2CallContext& c, const std::string& action) {
  return ImageSettingsCalls(c).Run(action);
}

}  // namespace strata::api
