// Fuzz target for image bundles (CreateRestoreImageTask reads them from a bucket anyone may have
// written): the signed XML manifest and the sealed, compressed data stream whose records write
// into new volumes. The first byte picks who made the bundle:
//  - 0, a stranger: the rest is the manifest as is. It can never verify, so ReadBundle must
//    refuse it;
//  - otherwise, a holder of the data key (the worst case: the signature proves nothing): the
//    rest is a manifest template and, after a NUL, the data stream. The target seals the stream
//    as part 0, fills $KEY, $FILE, $BYTES and $SHA in the template, and signs it, so the
//    fuzzer reaches the record parser.
// Either way a refused bundle leaves no snapshot or volume behind, and an accepted one is an
// image whose snapshots completed. Built with clang -fsanitize=fuzzer it is a libFuzzer target;
// otherwise fuzz_driver.cc runs it on seeded random mutations of the seeds below.

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <zstd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "crypto/aead.h"
#include "fuzz_scratch.h"
#include "image/bundle.h"
#include "strata/kms.h"
#include "strata/secret.h"
#include "strata/store.h"

namespace {

using namespace strata;

constexpr char kAccount[] = "111111111111";
constexpr char kSourceImage[] = "ami-0f0f0f0f0f0f0f0f0";
constexpr char kObjectKey[] = "fuzz.bundle";

std::string Hex(const unsigned char* bytes, size_t n) {
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(bytes), n));
}

// Never destroyed (libFuzzer exits from anywhere); its directory goes at exit.
struct Fixture {
  Fixture() {
    dir = FuzzScratchDir("strata-bfuzz");
    StoreOptions options;
    options.kms_root_key = RandomSecret(32);
    auto opened = Store::Open(dir + "/store", options);
    if (!opened.ok()) std::abort();
    store = std::move(*opened);
    region = store->DefaultRegion();
    auto key = region->kms().DefaultEbsKey(kAccount);
    if (!key.ok()) std::abort();
    auto data_key =
        region->kms().GenerateDataKey(kAccount, key->arn, 64, {{"strata:bundle", kSourceImage}});
    if (!data_key.ok()) std::abort();
    wrapped = absl::Base64Escape(data_key->ciphertext);
    aes_key = SecretBytes(data_key->plaintext.str().substr(0, 32));
    hmac_key = data_key->plaintext.str().substr(32, 32);
  }
  std::string dir;
  std::unique_ptr<Store> store;
  Region* region = nullptr;
  std::string wrapped;
  SecretBytes aes_key;
  std::string hmac_key;
};

Fixture& TheFixture() {
  static Fixture* fixture = new Fixture();
  return *fixture;
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

std::string Compress(const std::string& stream) {
  std::string out(ZSTD_compressBound(stream.size()), '\0');
  const size_t n = ZSTD_compress(out.data(), out.size(), stream.data(), stream.size(), 1);
  if (ZSTD_isError(n)) std::abort();
  out.resize(n);
  return out;
}

std::string Record(uint32_t stream, uint64_t offset, const std::string& data) {
  std::string r(1, '\1');
  for (int i = 0; i < 4; ++i) r.push_back(static_cast<char>(stream >> (8 * i)));
  for (int i = 0; i < 8; ++i) r.push_back(static_cast<char>(offset >> (8 * i)));
  const uint32_t length = static_cast<uint32_t>(data.size());
  for (int i = 0; i < 4; ++i) r.push_back(static_cast<char>(length >> (8 * i)));
  return r + data;
}

const char kTemplate[] =
    "<manifest><version>strata-bundle-1</version><image><sourceImageId>ami-0f0f0f0f0f0f0f0f0"
    "</sourceImageId><name>fuzzed</name><description></description><architecture>x86_64"
    "</architecture><virtualizationType>hvm</virtualizationType><bootMode></bootMode>"
    "<rootDeviceName>/dev/sda1</rootDeviceName><enaSupport>true</enaSupport><tpmSupport>"
    "</tpmSupport><imdsSupport></imdsSupport><blockDeviceMapping><mapping><deviceName>/dev/sda1"
    "</deviceName><virtualName></virtualName><noDevice>false</noDevice><ebs><volumeSize>1"
    "</volumeSize><volumeType>gp3</volumeType><iops>0</iops><throughput>0</throughput>"
    "<deleteOnTermination>true</deleteOnTermination><encrypted>false</encrypted><stream>0"
    "</stream></ebs></mapping></blockDeviceMapping></image><bundle><compression>zstd"
    "</compression><cipher>AES-256-GCM</cipher><partSize>10485760</partSize><kmsKeyArn>"
    "</kmsKeyArn><wrappedKey>$KEY</wrappedKey><parts><part><index>0</index><file>$FILE</file>"
    "<bytes>$BYTES</bytes><sha256>$SHA</sha256></part></parts></bundle>";

}  // namespace

// Seeds for tests/fuzz/fuzz_driver.cc.
std::vector<std::string> FuzzSeeds() {
  const std::string stream = std::string("SBD1") + Record(0, 0, std::string(4096, 'a')) +
                             Record(0, 1 << 20, std::string(512, 'b')) + std::string(1, '\0');
  return {
      std::string(1, '\1') + kTemplate + std::string(1, '\0') + stream,
      std::string(1, '\1') + kTemplate + std::string(1, '\0') + "SBD1" + std::string(1, '\0'),
      std::string(1, '\0') + kTemplate + "<signature>00</signature></manifest>",
  };
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  Fixture& f = TheFixture();
  const std::string input(reinterpret_cast<const char*>(data) + 1, size - 1);
  const std::string bucket = f.dir + "/bucket";
  std::filesystem::create_directories(bucket);
  std::filesystem::remove(bucket + "/" + kObjectKey + ".part.000");
  std::string manifest;
  if (data[0] == 0) {
    manifest = input;
  } else {
    const size_t nul = input.find('\0');
    const std::string templ = input.substr(0, nul);
    const std::string stream = nul == std::string::npos ? "" : input.substr(nul + 1);
    const std::string sealed =
        crypto::Seal(f.aes_key, Compress(stream), absl::StrCat(kSourceImage, "|part|0"));
    const std::string file = absl::StrCat(kObjectKey, ".part.000");
    WriteFile(bucket + "/" + file, sealed);
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int digest_len = 0;
    EVP_Digest(sealed.data(), sealed.size(), digest, &digest_len, EVP_sha256(), nullptr);
    manifest = absl::StrReplaceAll(templ, {{"$KEY", f.wrapped},
                                           {"$FILE", file},
                                           {"$BYTES", absl::StrCat(sealed.size())},
                                           {"$SHA", Hex(digest, digest_len)}});
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    HMAC(EVP_sha256(), f.hmac_key.data(), static_cast<int>(f.hmac_key.size()),
         reinterpret_cast<const unsigned char*>(manifest.data()), manifest.size(), mac, &mac_len);
    absl::StrAppend(&manifest, "<signature>", Hex(mac, mac_len), "</signature></manifest>");
  }
  WriteFile(bucket + "/" + kObjectKey, manifest);

  const size_t snapshots_before = f.region->ListSnapshots()->size();
  const size_t volumes_before = f.region->ListVolumes()->size();
  absl::StatusOr<ImageInfo> image = image::ReadBundle(*f.region, bucket, kObjectKey, kAccount);
  if (std::getenv("STRATA_FUZZ_VERBOSE") != nullptr) {
    std::fprintf(stderr, "bundle: %s\n",
                 image.ok() ? "accepted" : image.status().ToString().c_str());
  }
  if (data[0] == 0 && image.ok()) {
    std::fprintf(stderr, "a bundle no key holder signed was accepted\n");
    std::abort();
  }
  if (image.ok()) {
    for (const BlockDeviceMapping& m : image->mappings) {
      if (!m.ebs.has_value() || m.ebs->snapshot_id.empty()) continue;
      absl::StatusOr<SnapshotInfo> s = f.region->DescribeSnapshot(m.ebs->snapshot_id);
      if (!s.ok() || s->state != SnapshotState::kCompleted) {
        std::fprintf(stderr, "an accepted bundle's snapshot is not completed\n");
        std::abort();
      }
      if (!f.region->DeleteSnapshot(m.ebs->snapshot_id).ok()) std::abort();
    }
  } else if (image.status().message().empty()) {
    std::fprintf(stderr, "a refusal without a reason\n");
    std::abort();
  }
  if (f.region->ListSnapshots()->size() != snapshots_before ||
      f.region->ListVolumes()->size() != volumes_before) {
    std::fprintf(stderr, "ReadBundle left snapshots or volumes behind: %s\n",
                 image.status().ToString().c_str());
    std::abort();
  }
  return 0;
}
