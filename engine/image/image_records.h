#pragma once
// Catalog encodings of images, image settings and instances (JSON, so fields can be added
// without a format change). docs/formats/catalog.md.

#include <string>

#include "absl/status/statusor.h"
#include "strata/image.h"

namespace strata::image {

std::string EncodeImage(const ImageInfo& image);
absl::StatusOr<ImageInfo> DecodeImage(const std::string& bytes);
std::string EncodeSettings(const ImageSettings& settings);
absl::StatusOr<ImageSettings> DecodeSettings(const std::string& bytes);
std::string EncodeInstance(const InstanceInfo& instance);
absl::StatusOr<InstanceInfo> DecodeInstance(const std::string& bytes);

}  // namespace strata::image
