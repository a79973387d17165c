#pragma once
// TLS pre-shared key files as GnuTLS's psktool writes them: one IDENTITY:HEXKEY per line
// (blank lines and #-comments allowed), keys of 16 to 64 bytes. NBD's extra client keys
// (stratad --tls-psk-file) and the transfer protocol's peer keys (--transfer-psk-file) use it.

#include <map>
#include <string>

#include "absl/status/statusor.h"

namespace strata {

// Identity to key bytes. kInvalidArgument naming the file and line for anything malformed, an
// unreadable file or one without keys.
absl::StatusOr<std::map<std::string, std::string>> LoadPskFile(const std::string& path);

}  // namespace strata
