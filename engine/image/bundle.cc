#include "image/bundle.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <zstd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/xml.h"
#include "crypto/aead.h"
#include "util/status_macros.h"

namespace strata::image {
namespace {

constexpr char kManifestVersion[] = "strata-bundle-1";
constexpr char kStreamMagic[] = "SBD1";
constexpr uint8_t kRecordData = 1;
constexpr uint8_t kRecordEnd = 0;
constexpr size_t kMaxParts = 100000;
constexpr size_t kMaxManifestBytes = 16 << 20;
constexpr uint64_t kMaxRecordBytes = kApiBlockBytes;
constexpr size_t kDataKeyBytes = 64;  // AES-256-GCM key, then the HMAC-SHA256 key.
constexpr char kContextKey[] = "strata:bundle";

absl::Status Corrupt(const std::string& what) {
  return WithAwsErrorCode(absl::DataLossError(what), "InvalidParameterValue");
}

std::string Hex(absl::string_view bytes) { return absl::BytesToHexString(bytes); }

std::string Sha256(absl::string_view bytes) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(bytes.data(), bytes.size(), digest, &len, EVP_sha256(), nullptr);
  return Hex(absl::string_view(reinterpret_cast<const char*>(digest), len));
}

std::string HmacSha256(absl::string_view key, absl::string_view bytes) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), mac, &len);
  return Hex(absl::string_view(reinterpret_cast<const char*>(mac), len));
}

uint64_t ToNumber(const std::string& text) {
  uint64_t v = 0;
  return absl::SimpleAtoi(text, &v) ? v : 0;
}

std::string PartName(const std::string& object_key, size_t index) {
  return absl::StrFormat("%s.part.%03d", object_key, index);
}

absl::Status ValidateObjectKey(const std::string& key) {
  static const std::regex kKey("^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$");
  if (!std::regex_match(key, kKey)) {
    return WithAwsErrorCode(
        absl::InvalidArgumentError(absl::StrCat("invalid object key \"", key,
                                                "\": 1 to 200 letters, digits, '.', '_' or '-'")),
        "InvalidParameterValue");
  }
  return absl::OkStatus();
}

absl::Status WriteFileAtomically(const std::string& path, absl::string_view bytes) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.flush();
    if (!out) return absl::InternalError(absl::StrCat("write ", tmp, " failed"));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return absl::InternalError(absl::StrCat("rename ", tmp, ": ", ec.message()));
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadFile(const std::string& path, size_t limit,
                                     const std::string& what) {
  std::error_code ec;
  const uintmax_t size = std::filesystem::file_size(path, ec);
  if (ec) return Corrupt(absl::StrCat(what, " is missing (", path, ")"));
  if (size > limit) return Corrupt(absl::StrCat(what, " is too large (", size, " bytes)"));
  std::ifstream in(path, std::ios::binary);
  std::string bytes(size, '\0');
  in.read(bytes.data(), static_cast<std::streamsize>(size));
  if (!in) return Corrupt(absl::StrCat(what, " cannot be read (", path, ")"));
  return bytes;
}

void PutU32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
}
void PutU64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
}

// Compresses a stream, seals it in parts of kBundlePartBytes and writes each part file.
class PartWriter {
 public:
  PartWriter(std::string dir, std::string object_key, const SecretBytes& key, std::string aad)
      : dir_(std::move(dir)),
        object_key_(std::move(object_key)),
        key_(key),
        aad_(std::move(aad)),
        zstd_(ZSTD_createCCtx()) {
    ZSTD_CCtx_setParameter(zstd_, ZSTD_c_compressionLevel, 3);
  }
  ~PartWriter() { ZSTD_freeCCtx(zstd_); }

  absl::Status Add(absl::string_view bytes, bool end) {
    ZSTD_inBuffer in{bytes.data(), bytes.size(), 0};
    for (;;) {
      ZSTD_outBuffer o{out_.data(), out_.size(), 0};
      const size_t left = ZSTD_compressStream2(zstd_, &o, &in, end ? ZSTD_e_end : ZSTD_e_continue);
      if (ZSTD_isError(left)) return absl::InternalError(ZSTD_getErrorName(left));
      pending_.append(out_.data(), o.pos);
      while (pending_.size() >= kBundlePartBytes) {
        STRATA_RETURN_IF_ERROR(Flush(absl::string_view(pending_).substr(0, kBundlePartBytes)));
        pending_.erase(0, kBundlePartBytes);
      }
      if (end ? left == 0 : in.pos == in.size) break;
    }
    if (end && (!pending_.empty() || parts_.empty())) {
      STRATA_RETURN_IF_ERROR(Flush(pending_));
      pending_.clear();
    }
    return absl::OkStatus();
  }

  struct Part {
    std::string file;
    uint64_t bytes;
    std::string sha256;
  };
  const std::vector<Part>& parts() const { return parts_; }

 private:
  absl::Status Flush(absl::string_view compressed) {
    const size_t index = parts_.size();
    const std::string sealed = crypto::Seal(key_, compressed, absl::StrCat(aad_, "|part|", index));
    const std::string file = PartName(object_key_, index);
    STRATA_RETURN_IF_ERROR(WriteFileAtomically(absl::StrCat(dir_, "/", file), sealed));
    parts_.push_back({file, sealed.size(), Sha256(sealed)});
    return absl::OkStatus();
  }

  const std::string dir_, object_key_;
  const SecretBytes& key_;
  const std::string aad_;
  ZSTD_CCtx* zstd_;
  std::string out_ = std::string(ZSTD_CStreamOutSize(), '\0');  // Reused by every Add.
  std::string pending_;
  std::vector<Part> parts_;
};

void WriteMapping(xml::Writer& x, const BlockDeviceMapping& m, int stream) {
  x.Open("mapping");
  x.Text("deviceName", m.device_name);
  if (!m.virtual_name.empty()) x.Text("virtualName", m.virtual_name);
  if (m.no_device) x.Bool("noDevice", true);
  if (m.ebs.has_value()) {
    const EbsBlockDevice& e = *m.ebs;
    x.Open("ebs");
    x.Number("volumeSize", e.volume_size_gib);
    x.Text("volumeType", e.volume_type);
    x.Number("iops", e.iops);
    x.Number("throughput", e.throughput);
    x.Bool("deleteOnTermination", e.delete_on_termination);
    x.Bool("encrypted", e.encrypted);
    x.Number("stream", stream);
    x.Close();
  }
  x.Close();
}

// The manifest's signature is an HMAC of every byte before its <signature> element; the
// document is written with this placeholder there, then the placeholder is replaced.
constexpr char kSignaturePlaceholder[] =
    "0000000000000000000000000000000000000000000000000000000000000000";

}  // namespace

absl::Status WriteBundle(Region& region, const ImageInfo& image, const std::string& dir,
                         const std::string& object_key, const std::string& account,
                         const std::function<void(int)>& progress) {
  STRATA_RETURN_IF_ERROR(ValidateObjectKey(object_key));
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("mkdir ", dir, ": ", ec.message()));
  // The data key, wrapped by the account's default EBS key and bound to the image.
  STRATA_ASSIGN_OR_RETURN(KmsKeyInfo kms_key, region.kms().DefaultEbsKey(account));
  const EncryptionContext context = {{kContextKey, image.id}};
  STRATA_ASSIGN_OR_RETURN(
      DataKey data_key, region.kms().GenerateDataKey(account, kms_key.arn, kDataKeyBytes, context));
  const SecretBytes aes_key(data_key.plaintext.str().substr(0, 32));
  const SecretBytes hmac_key(data_key.plaintext.str().substr(32, 32));

  std::vector<std::string> snapshots;
  uint64_t total_bytes = 0;
  for (const BlockDeviceMapping& m : image.mappings) {
    if (!m.ebs.has_value() || m.ebs->snapshot_id.empty()) continue;
    STRATA_ASSIGN_OR_RETURN(SnapshotInfo s, region.DescribeSnapshot(m.ebs->snapshot_id));
    snapshots.push_back(s.id);
    total_bytes += s.volume_size_bytes;
  }
  PartWriter parts(dir, object_key, aes_key, image.id);
  STRATA_RETURN_IF_ERROR(parts.Add(kStreamMagic, false));
  uint64_t done_bytes = 0;
  std::string record;
  std::string block(kApiBlockBytes, '\0');
  for (size_t stream = 0; stream < snapshots.size(); ++stream) {
    STRATA_ASSIGN_OR_RETURN(std::unique_ptr<Snapshot> snapshot,
                            region.OpenSnapshot(snapshots[stream]));
    std::string token;
    do {  // Only the blocks that hold data: zeros are not stored.
      STRATA_ASSIGN_OR_RETURN(BlockListing listing,
                              region.ListSnapshotBlocks(snapshots[stream], token, 10000));
      for (const BlockRef& b : listing.blocks) {
        const uint64_t offset = b.block_index * kApiBlockBytes;
        const uint64_t length = std::min<uint64_t>(kApiBlockBytes, snapshot->size_bytes() - offset);
        STRATA_RETURN_IF_ERROR(snapshot->Read(
            offset, std::span<std::byte>(reinterpret_cast<std::byte*>(block.data()), length)));
        record.clear();
        record.push_back(static_cast<char>(kRecordData));
        PutU32(record, static_cast<uint32_t>(stream));
        PutU64(record, offset);
        PutU32(record, static_cast<uint32_t>(length));
        STRATA_RETURN_IF_ERROR(parts.Add(record, false));
        STRATA_RETURN_IF_ERROR(parts.Add(absl::string_view(block.data(), length), false));
      }
      token = listing.next_token;
      if (!listing.blocks.empty() && progress && total_bytes > 0) {
        const uint64_t position = listing.blocks.back().block_index * kApiBlockBytes;
        progress(
            static_cast<int>(std::min<uint64_t>(99, (done_bytes + position) * 100 / total_bytes)));
      }
    } while (!token.empty());
    done_bytes += snapshot->size_bytes();
  }
  STRATA_RETURN_IF_ERROR(parts.Add(std::string(1, static_cast<char>(kRecordEnd)), true));

  xml::Writer x;
  x.Open("manifest");
  x.Text("version", kManifestVersion);
  x.Open("image");
  x.Text("sourceImageId", image.id);
  x.Text("name", image.name);
  x.Text("description", image.description);
  x.Text("architecture", image.architecture);
  x.Text("virtualizationType", image.virtualization_type);
  x.Text("bootMode", image.boot_mode);
  x.Text("rootDeviceName", image.root_device_name);
  x.Bool("enaSupport", image.ena_support);
  x.Text("tpmSupport", image.tpm_support);
  x.Text("imdsSupport", image.imds_support);
  x.Open("blockDeviceMapping");
  int stream = 0;
  for (const BlockDeviceMapping& mapping : image.mappings) {
    const bool has_stream = mapping.ebs.has_value() && !mapping.ebs->snapshot_id.empty();
    WriteMapping(x, mapping, has_stream ? stream++ : -1);
  }
  x.Close();
  x.Close();
  x.Open("bundle");
  x.Text("compression", "zstd");
  x.Text("cipher", "AES-256-GCM");
  x.Number("partSize", kBundlePartBytes);
  x.Text("kmsKeyArn", data_key.key_arn);
  x.Text("wrappedKey", absl::Base64Escape(data_key.ciphertext));
  x.Open("parts");
  for (size_t i = 0; i < parts.parts().size(); ++i) {
    const PartWriter::Part& p = parts.parts()[i];
    x.Open("part");
    x.Number("index", i);
    x.Text("file", p.file);
    x.Number("bytes", p.bytes);
    x.Text("sha256", p.sha256);
    x.Close();
  }
  x.Close();
  x.Close();
  x.Text("signature", kSignaturePlaceholder);
  std::string m = x.Finish();
  const size_t sig_at = m.rfind("<signature>");
  STRATA_CHECK(sig_at != std::string::npos);
  const size_t value_at = sig_at + std::string_view("<signature>").size();
  m.replace(value_at, std::string_view(kSignaturePlaceholder).size(),
            HmacSha256(hmac_key.str(), absl::string_view(m).substr(0, sig_at)));
  STRATA_RETURN_IF_ERROR(WriteFileAtomically(absl::StrCat(dir, "/", object_key), m));
  if (progress) progress(100);
  return absl::OkStatus();
}

absl::StatusOr<ImageInfo> ReadBundle(Region& region, const std::string& dir,
                                     const std::string& object_key, const std::string& account) {
  STRATA_RETURN_IF_ERROR(ValidateObjectKey(object_key));
  STRATA_ASSIGN_OR_RETURN(std::string manifest,
                          ReadFile(absl::StrCat(dir, "/", object_key), kMaxManifestBytes,
                                   absl::StrCat("the manifest ", object_key)));
  absl::StatusOr<xml::Element> parsed = xml::Parse(manifest);
  if (!parsed.ok()) return Corrupt(absl::StrCat(object_key, ": ", parsed.status().message()));
  const xml::Element& root = *parsed;
  const xml::Element no_element;
  auto child = [&no_element](const xml::Element& parent, absl::string_view name) {
    const xml::Element* found = parent.Child(name);
    return found == nullptr ? &no_element : found;
  };
  const xml::Element& image_xml = *child(root, "image");
  const xml::Element& bundle_xml = *child(root, "bundle");
  if (root.name != "manifest" || root.ChildText("version") != kManifestVersion) {
    return Corrupt(
        absl::StrCat(object_key, " is not a Strata bundle manifest (", kManifestVersion, ")"));
  }
  // 1. The signature, with the data key the manifest carries (unwrapped by the KMS).
  const size_t sig_at = manifest.rfind("<signature>");
  if (sig_at == std::string::npos) return Corrupt("the manifest has no signature");
  const std::string signature = root.ChildText("signature");
  const std::string source_image = image_xml.ChildText("sourceImageId");
  std::string wrapped;
  if (!absl::Base64Unescape(bundle_xml.ChildText("wrappedKey"), &wrapped)) {
    return Corrupt("the manifest's wrapped key is not base64");
  }
  STRATA_ASSIGN_OR_RETURN(
      Decrypted key, region.kms().Decrypt(account, wrapped, {{kContextKey, source_image}}, ""));
  if (key.plaintext.size() != kDataKeyBytes) return Corrupt("the bundle's data key is malformed");
  const std::string expected = HmacSha256(SecretBytes(key.plaintext.str().substr(32, 32)).str(),
                                          absl::string_view(manifest).substr(0, sig_at));
  if (signature.size() != expected.size() ||
      CRYPTO_memcmp(signature.data(), expected.data(), expected.size()) != 0) {
    return Corrupt("the manifest's signature does not match: it was altered");
  }
  // 2. Every part's digest, before any data is used.
  const std::vector<const xml::Element*> part_xml = child(bundle_xml, "parts")->Children("part");
  if (part_xml.empty() || part_xml.size() > kMaxParts)
    return Corrupt("the manifest lists no parts");
  std::vector<std::string> part_files;
  for (size_t i = 0; i < part_xml.size(); ++i) {
    const std::string file = part_xml[i]->ChildText("file");
    const uint64_t part_bytes = ToNumber(part_xml[i]->ChildText("bytes"));
    if (ToNumber(part_xml[i]->ChildText("index")) != i || file != PartName(object_key, i)) {
      return Corrupt(absl::StrCat("part ", i, " is out of order in the manifest"));
    }
    absl::StatusOr<std::string> bytes =
        ReadFile(absl::StrCat(dir, "/", file), kBundlePartBytes + 64, absl::StrCat("part ", file));
    if (!bytes.ok()) return bytes.status();
    if (bytes->size() != part_bytes) {
      return Corrupt(absl::StrCat("part ", file, " has ", bytes->size(),
                                  " bytes, the manifest says ", part_bytes, " (truncated?)"));
    }
    if (Sha256(*bytes) != part_xml[i]->ChildText("sha256")) {
      return Corrupt(
          absl::StrCat("part ", file, " does not match its digest (tampered or reordered)"));
    }
    part_files.push_back(file);
  }

  // 3. The image, then its data into new snapshots through hidden builder volumes.
  ImageInfo image;
  image.name = image_xml.ChildText("name");
  image.description = image_xml.ChildText("description");
  image.architecture = image_xml.ChildText("architecture");
  image.virtualization_type = image_xml.ChildText("virtualizationType");
  image.boot_mode = image_xml.ChildText("bootMode");
  image.root_device_name = image_xml.ChildText("rootDeviceName");
  image.ena_support = image_xml.ChildText("enaSupport") == "true";
  image.tpm_support = image_xml.ChildText("tpmSupport");
  image.imds_support = image_xml.ChildText("imdsSupport");
  image.owner = account;
  image.source_image_id = source_image;
  struct Builder {
    std::string snapshot_id, volume_id;
    uint64_t size_bytes;
  };
  std::vector<Builder> builders;
  auto abort_all = [&](const absl::Status& why) {
    for (const Builder& b : builders) {
      (void)region.AbortDirectSnapshot(b.snapshot_id, std::string(why.message()));
      (void)region.DeleteSnapshot(b.snapshot_id);
    }
    return why;
  };
  for (const xml::Element* mx : child(image_xml, "blockDeviceMapping")->Children("mapping")) {
    BlockDeviceMapping m;
    m.device_name = mx->ChildText("deviceName");
    m.virtual_name = mx->ChildText("virtualName");
    m.no_device = mx->ChildText("noDevice") == "true";
    if (const xml::Element* ex = mx->Child("ebs"); ex != nullptr) {
      EbsBlockDevice e;
      e.volume_size_gib = ToNumber(ex->ChildText("volumeSize"));
      e.volume_type = ex->ChildText("volumeType");
      e.iops = ToNumber(ex->ChildText("iops"));
      e.throughput = ToNumber(ex->ChildText("throughput"));
      e.delete_on_termination = ex->ChildText("deleteOnTermination") == "true";
      e.encrypted = ex->ChildText("encrypted") == "true";
      if (ex->ChildText("stream") != "-1") {
        if (e.volume_size_gib == 0 || e.volume_size_gib > 16384) {
          return abort_all(Corrupt(absl::StrCat("mapping ", m.device_name, ": bad volume size")));
        }
        CreateSnapshotRequest request;
        request.owner = account;
        request.description = absl::StrCat("Restored from ", object_key, " (", source_image, ")");
        request.encrypted = e.encrypted;
        absl::StatusOr<Region::DirectSnapshot> direct =
            region.StartDirectSnapshot(e.volume_size_gib << 30, "", request);
        if (!direct.ok()) return abort_all(direct.status());
        builders.push_back(
            {direct->snapshot.id, direct->builder_volume_id, e.volume_size_gib << 30});
        e.snapshot_id = direct->snapshot.id;
      }
      m.ebs = e;
    }
    image.mappings.push_back(std::move(m));
  }
  // Decrypt, decompress and apply the records in order.
  ZSTD_DCtx* zstd = ZSTD_createDCtx();
  std::string stream;
  size_t consumed = 0;
  bool magic_seen = false, ended = false;
  absl::Status applied = absl::OkStatus();
  for (size_t i = 0; i < part_files.size() && applied.ok(); ++i) {
    absl::StatusOr<std::string> sealed =
        ReadFile(absl::StrCat(dir, "/", part_files[i]), kBundlePartBytes + 64, part_files[i]);
    if (!sealed.ok()) {
      applied = sealed.status();
      break;
    }
    absl::StatusOr<SecretBytes> compressed =
        crypto::Open(SecretBytes(key.plaintext.str().substr(0, 32)), *sealed,
                     absl::StrCat(source_image, "|part|", i));
    if (!compressed.ok()) {
      applied = Corrupt(absl::StrCat("part ", part_files[i], " does not decrypt"));
      break;
    }
    ZSTD_inBuffer in{compressed->str().data(), compressed->size(), 0};
    std::string out(ZSTD_DStreamOutSize(), '\0');
    while (in.pos < in.size && applied.ok()) {
      ZSTD_outBuffer o{out.data(), out.size(), 0};
      const size_t r = ZSTD_decompressStream(zstd, &o, &in);
      if (ZSTD_isError(r)) {
        applied = Corrupt(absl::StrCat("part ", part_files[i], ": ", ZSTD_getErrorName(r)));
        break;
      }
      stream.append(out.data(), o.pos);
      // Apply every complete record.
      if (!magic_seen) {
        if (stream.size() < 4) continue;
        if (stream.compare(0, 4, kStreamMagic) != 0) {
          applied = Corrupt("the bundle's data stream is not SBD1");
          break;
        }
        magic_seen = true;
        consumed = 4;
      }
      while (applied.ok() && !ended && consumed < stream.size()) {
        const uint8_t type = static_cast<uint8_t>(stream[consumed]);
        if (type == kRecordEnd) {
          ended = true;
          ++consumed;
          break;
        }
        if (type != kRecordData) {
          applied = Corrupt("the bundle's data stream has an unknown record");
          break;
        }
        if (stream.size() - consumed < 17) break;
        uint32_t index = 0, length = 0;
        uint64_t offset = 0;
        std::memcpy(&index, stream.data() + consumed + 1, 4);
        std::memcpy(&offset, stream.data() + consumed + 5, 8);
        std::memcpy(&length, stream.data() + consumed + 13, 4);
        if (index >= builders.size() || length > kMaxRecordBytes || length % 512 != 0 ||
            offset % 512 != 0 || offset + length > builders[index].size_bytes) {
          applied = Corrupt("the bundle's data stream has a record out of range");
          break;
        }
        if (stream.size() - consumed < 17 + length) break;
        absl::StatusOr<Volume*> volume = region.GetVolume(builders[index].volume_id);
        applied = volume.ok() ? (*volume)->Write(offset, std::span<const std::byte>(
                                                             reinterpret_cast<const std::byte*>(
                                                                 stream.data() + consumed + 17),
                                                             length))
                              : volume.status();
        consumed += 17 + length;
      }
      if (consumed > (1 << 20)) {  // Keep the buffer small.
        stream.erase(0, consumed);
        consumed = 0;
      }
    }
  }
  ZSTD_freeDCtx(zstd);
  if (applied.ok() && !ended) applied = Corrupt("the bundle's data stream ends early");
  if (!applied.ok()) return abort_all(applied);
  for (const Builder& b : builders) {
    if (absl::Status s = region.CompleteDirectSnapshot(b.snapshot_id); !s.ok()) return abort_all(s);
  }
  for (const Builder& b : builders) {
    absl::StatusOr<SnapshotInfo> s = region.WaitForSnapshot(b.snapshot_id, 600000);
    if (!s.ok() || s->state != SnapshotState::kCompleted) {
      return abort_all(s.ok() ? absl::InternalError(absl::StrCat("snapshot ", b.snapshot_id, ": ",
                                                                 s->state_message))
                              : s.status());
    }
  }
  return image;
}

}  // namespace strata::image
