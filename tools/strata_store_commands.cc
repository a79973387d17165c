// strata's subcommands that open the store directory directly (stratad must be stopped: the
// store is locked by one process at a time): volumes, snapshots, changed blocks, data import
// and export, regions, accounts, garbage collection.

#include <cstdio>
#include <fstream>
#include <functional>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "admin.h"
#include "command_line.h"
#include "strata/store.h"
#include "strata_commands.h"

namespace strata::tools {
namespace {

void PrintVolume(const VolumeInfo& v) {
  std::printf("%s\tsize=%llu\tsnapshot=%s\thydrated=%d%%%s", v.id.c_str(),
              (unsigned long long)v.size_bytes, v.snapshot_id.empty() ? "-" : v.snapshot_id.c_str(),
              v.hydration_percent, v.hydrating ? " (hydrating)" : "");
  for (const auto& [k, val] : v.tags) std::printf("\t%s=%s", k.c_str(), val.c_str());
  std::printf("\n");
}

void PrintSnapshot(const SnapshotInfo& s) {
  std::printf("%s\tvolume=%s\tparent=%s\tstate=%s\tprogress=%d%%\tsize=%llu\tincremental=%llu",
              s.id.c_str(), s.volume_id.c_str(), s.parent_id.empty() ? "-" : s.parent_id.c_str(),
              SnapshotStateName(s.state), s.progress_percent,
              (unsigned long long)s.volume_size_bytes, (unsigned long long)s.incremental_bytes);
  if (s.storage_tier != "standard") std::printf("\ttier=%s", s.storage_tier.c_str());
  if (!s.description.empty()) std::printf("\tdescription=%s", s.description.c_str());
  if (!s.state_message.empty()) std::printf("\tmessage=%s", s.state_message.c_str());
  std::printf("\n");
}

void PrintAccount(const Account& a) {
  std::printf(
      "{\"AccountId\": \"%s\", \"Name\": \"%s\", \"AccessKeyId\": \"%s\", "
      "\"SecretAccessKey\": \"%s\"}\n",
      a.id.c_str(), a.name.c_str(), a.access_key_id.c_str(), a.secret_access_key.c_str());
}

absl::StatusOr<std::map<std::string, std::string>> Tags(const std::vector<std::string>& specs) {
  std::map<std::string, std::string> tags;
  for (const std::string& spec : specs) {
    std::vector<std::string> kv = absl::StrSplit(spec, absl::MaxSplits('=', 1));
    if (kv.size() != 2 || kv[0].empty()) return absl::InvalidArgumentError("--tag takes KEY=VALUE");
    tags[kv[0]] = kv[1];
  }
  return tags;
}

// A size option: 0 when not given.
absl::StatusOr<uint64_t> SizeOption(const std::string& text, const char* name) {
  return text.empty() ? absl::StatusOr<uint64_t>(0) : ParseSize(text, name);
}

// Copies a Volume's or a Snapshot's bytes to a file in 1 MiB pieces.
template <typename Source>
absl::Status ExportTo(Source& source, const std::string& path) {
  const uint64_t size = source.size_bytes();
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::InvalidArgumentError(absl::StrCat("cannot write ", path));
  std::vector<std::byte> buf(1 << 20);
  for (uint64_t off = 0; off < size; off += buf.size()) {
    auto piece = std::span(buf).first(std::min<uint64_t>(buf.size(), size - off));
    if (absl::Status s = source.Read(off, piece); !s.ok()) return s;
    out.write(reinterpret_cast<const char*>(piece.data()),
              static_cast<std::streamsize>(piece.size()));
  }
  out.close();
  if (!out) return absl::DataLossError(absl::StrCat("writing ", path, " failed"));
  return absl::OkStatus();
}

// Writes FILE's bytes into the volume from `offset`, a short tail padded to a whole sector.
absl::Status ImportInto(Volume& volume, const std::string& path, uint64_t offset) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("cannot read ", path));
  std::vector<std::byte> buf(1 << 20);
  uint64_t pos = offset;
  while (in) {
    in.read(reinterpret_cast<char*>(buf.data()), static_cast<std::streamsize>(buf.size()));
    const size_t n = static_cast<size_t>(in.gcount());
    if (n == 0) break;
    const size_t padded = (n + kSectorBytes - 1) / kSectorBytes * kSectorBytes;
    std::fill(buf.begin() + n, buf.begin() + padded, std::byte{0});
    if (absl::Status s = volume.Write(pos, std::span(buf).first(padded)); !s.ok()) return s;
    pos += padded;
  }
  return volume.Flush();
}

absl::Status PrintBlocks(
    const std::function<absl::StatusOr<BlockListing>(const std::string&)>& page) {
  std::string token;
  uint64_t count = 0;
  do {
    auto listing = page(token);
    if (!listing.ok()) return listing.status();
    for (const auto& b : listing->blocks) {
      std::printf("%llu\t%s\t%s\n", (unsigned long long)b.block_index,
                  b.first_token.empty() ? "-" : b.first_token.c_str(),
                  b.second_token.empty() ? "-" : b.second_token.c_str());
      ++count;
    }
    token = listing->next_token;
  } while (!token.empty());
  std::printf("%llu blocks of %llu bytes\n", (unsigned long long)count,
              (unsigned long long)kApiBlockBytes);
  return absl::OkStatus();
}

// Opens the store for a command that works on it directly. The KMS root key is loaded if the
// store has one (never made here: stratad makes it on first start).
absl::StatusOr<std::unique_ptr<Store>> OpenStore(const CommandLine& cl) {
  StoreOptions options;
  options.background_work = false;  // The CLI runs background work itself, then exits.
  const std::string key_path =
      cl.kms_root_key_file.empty() ? DefaultKmsRootKeyPath(cl.data_dir) : cl.kms_root_key_file;
  absl::StatusOr<SecretBytes> root_key = LoadKmsRootKey(key_path, /*generate=*/false, nullptr);
  if (!root_key.ok()) return root_key.status();
  options.kms_root_key = std::move(*root_key);
  return Store::Open(cl.data_dir, options);
}

// Runs `body` on the store, then whatever background work it left (snapshot ingest, deletion,
// hydration), so the command's effect is complete when strata exits.
int WithRegion(const CommandLine& cl, const std::function<absl::Status(Region&)>& body) {
  absl::StatusOr<std::unique_ptr<Store>> store = OpenStore(cl);
  if (!store.ok()) return Fail(store.status());
  Region* region = (*store)->DefaultRegion();
  if (!cl.region.empty()) {
    absl::StatusOr<Region*> named = (*store)->GetRegion(cl.region);
    if (!named.ok()) return Fail(named.status());
    region = *named;
  }
  absl::Status status = body(*region);
  if (status.ok()) status = region->RunBackgroundWork();
  return status.ok() ? 0 : Fail(status);
}

// Adds a leaf subcommand whose action runs on the region.
CLI::App* RegionCommand(CLI::App& parent, const char* name, const char* help, const CommandLine& cl,
                        Run& run, std::function<absl::Status(Region&)> body) {
  CLI::App* sub = parent.add_subcommand(name, help);
  sub->callback(
      [&cl, &run, body = std::move(body)] { run = [&cl, body] { return WithRegion(cl, body); }; });
  return sub;
}

void AddVolumeCommands(CLI::App& app, CommandLine& cl, Run& run) {
  CLI::App* volume = app.add_subcommand("volume", "volumes, on the store directly");
  volume->require_subcommand(1);
  CLI::App* create = RegionCommand(*volume, "create", "create a volume; prints it", cl, run,
                                   [&cl](Region& region) -> absl::Status {
                                     absl::StatusOr<uint64_t> size = SizeOption(cl.size, "--size");
                                     if (!size.ok()) return size.status();
                                     auto tags = Tags(cl.tags);
                                     if (!tags.ok()) return tags.status();
                                     auto info = region.CreateVolume({*size, cl.snapshot, *tags});
                                     if (!info.ok()) return info.status();
                                     PrintVolume(*info);
                                     return absl::OkStatus();
                                   });
  create->add_option("--size", cl.size, "size, e.g. 8G (default: the snapshot's)")
      ->option_text("SIZE");
  create->add_option("--snapshot", cl.snapshot, "an O(1) clone of this snapshot, read lazily")
      ->option_text("SNAP");
  create->add_option("--tag", cl.tags, "a tag (repeatable)")->option_text("KEY=VALUE");

  RegionCommand(*volume, "list", "list volumes", cl, run, [](Region& region) -> absl::Status {
    auto all = region.ListVolumes();
    if (!all.ok()) return all.status();
    for (const VolumeInfo& v : *all) PrintVolume(v);
    return absl::OkStatus();
  });
  RegionCommand(*volume, "describe", "describe a volume", cl, run,
                [&cl](Region& region) -> absl::Status {
                  auto info = region.DescribeVolume(cl.volume_id);
                  if (!info.ok()) return info.status();
                  PrintVolume(*info);
                  return absl::OkStatus();
                })
      ->add_option("VOL", cl.volume_id, "volume id")
      ->required();
  RegionCommand(*volume, "delete", "delete a volume", cl, run,
                [&cl](Region& region) { return region.DeleteVolume(cl.volume_id); })
      ->add_option("VOL", cl.volume_id, "volume id")
      ->required();
  CLI::App* grow = RegionCommand(*volume, "grow", "grow a volume (never shrinks)", cl, run,
                                 [&cl](Region& region) -> absl::Status {
                                   auto size = SizeOption(cl.size, "--size");
                                   if (!size.ok()) return size.status();
                                   return region.GrowVolume(cl.volume_id, *size);
                                 });
  grow->add_option("VOL", cl.volume_id, "volume id")->required();
  grow->add_option("--size", cl.size, "the new size")->option_text("SIZE")->required();
  CLI::App* hydrate =
      RegionCommand(*volume, "hydrate", "copy the base snapshot into the volume", cl, run,
                    [&cl](Region& region) -> absl::Status {
                      auto rate = SizeOption(cl.rate, "--rate");
                      if (!rate.ok()) return rate.status();
                      return region.StartHydration(cl.volume_id, *rate);  // WithRegion runs it.
                    });
  hydrate->add_option("VOL", cl.volume_id, "volume id")->required();
  hydrate->add_option("--rate", cl.rate, "bytes per second, e.g. 50M (default: unlimited)")
      ->option_text("BYTES/S");
  CLI::App* import = RegionCommand(*volume, "import", "write FILE's bytes into the volume", cl, run,
                                   [&cl](Region& region) -> absl::Status {
                                     auto offset = SizeOption(cl.offset, "--offset");
                                     if (!offset.ok()) return offset.status();
                                     auto volume = region.GetVolume(cl.volume_id);
                                     if (!volume.ok()) return volume.status();
                                     return ImportInto(**volume, cl.file, *offset);
                                   });
  import->add_option("VOL", cl.volume_id, "volume id")->required();
  import->add_option("FILE", cl.file, "the bytes to write")->required();
  import->add_option("--offset", cl.offset, "where to start, e.g. 1M (default 0)")
      ->option_text("N");
  CLI::App* exp = RegionCommand(*volume, "export", "write the volume's bytes to FILE", cl, run,
                                [&cl](Region& region) -> absl::Status {
                                  auto volume = region.GetVolume(cl.volume_id);
                                  if (!volume.ok()) return volume.status();
                                  return ExportTo(**volume, cl.file);
                                });
  exp->add_option("VOL", cl.volume_id, "volume id")->required();
  exp->add_option("FILE", cl.file, "where to write")->required();
  AddVolumeApiCommands(*volume, cl, run);
}

void AddSnapshotCommands(CLI::App& app, CommandLine& cl, Run& run) {
  CLI::App* snapshot = app.add_subcommand("snapshot", "snapshots, on the store directly");
  snapshot->require_subcommand(1);
  CLI::App* create =
      RegionCommand(*snapshot, "create", "snapshot a volume; waits until it completes", cl, run,
                    [&cl](Region& region) -> absl::Status {
                      auto info = region.CreateSnapshot({cl.volume_id, cl.description, {}});
                      if (!info.ok()) return info.status();
                      // Completes it.
                      if (absl::Status s = region.RunBackgroundWork(); !s.ok()) {
                        return s;
                      }
                      auto done = region.DescribeSnapshot(info->id);
                      if (!done.ok()) return done.status();
                      PrintSnapshot(*done);
                      return absl::OkStatus();
                    });
  create->add_option("VOL", cl.volume_id, "volume id")->required();
  create->add_option("--description", cl.description, "the snapshot's description")
      ->option_text("TEXT");
  RegionCommand(*snapshot, "list", "list snapshots", cl, run, [](Region& region) -> absl::Status {
    auto all = region.ListSnapshots();
    if (!all.ok()) return all.status();
    for (const SnapshotInfo& s : *all) PrintSnapshot(s);
    return absl::OkStatus();
  });
  RegionCommand(*snapshot, "describe", "describe a snapshot", cl, run,
                [&cl](Region& region) -> absl::Status {
                  auto info = region.DescribeSnapshot(cl.snapshot_id);
                  if (!info.ok()) return info.status();
                  PrintSnapshot(*info);
                  return absl::OkStatus();
                })
      ->add_option("SNAP", cl.snapshot_id, "snapshot id")
      ->required();
  RegionCommand(*snapshot, "delete", "delete a snapshot (the rest of its chain stays whole)", cl,
                run, [&cl](Region& region) { return region.DeleteSnapshot(cl.snapshot_id); })
      ->add_option("SNAP", cl.snapshot_id, "snapshot id")
      ->required();
  CLI::App* exp = RegionCommand(*snapshot, "export", "write the snapshot's bytes to FILE", cl, run,
                                [&cl](Region& region) -> absl::Status {
                                  auto snap = region.OpenSnapshot(cl.snapshot_id);
                                  if (!snap.ok()) return snap.status();
                                  return ExportTo(**snap, cl.file);
                                });
  exp->add_option("SNAP", cl.snapshot_id, "snapshot id")->required();
  exp->add_option("FILE", cl.file, "where to write")->required();
  RegionCommand(*snapshot, "blocks", "list the snapshot's non-zero 512 KiB blocks", cl, run,
                [&cl](Region& region) {
                  return PrintBlocks([&](const std::string& t) {
                    return region.ListSnapshotBlocks(cl.snapshot_id, t, 10000);
                  });
                })
      ->add_option("SNAP", cl.snapshot_id, "snapshot id")
      ->required();
  CLI::App* changed = RegionCommand(
      *snapshot, "changed", "list the 512 KiB blocks that differ between two snapshots", cl, run,
      [&cl](Region& region) {
        return PrintBlocks([&](const std::string& t) {
          return region.ListChangedBlocks(cl.snapshot_id, cl.second_snapshot_id, t, 10000);
        });
      });
  changed->add_option("SNAP1", cl.snapshot_id, "the older snapshot")->required();
  changed->add_option("SNAP2", cl.second_snapshot_id, "the newer snapshot")->required();
}

// Runs `body` on the opened store (region and account commands).
int WithStore(const CommandLine& cl, const std::function<int(Store&)>& body) {
  absl::StatusOr<std::unique_ptr<Store>> store = OpenStore(cl);
  if (!store.ok()) return Fail(store.status());
  return body(**store);
}

void AddRegionAndAccountCommands(CLI::App& app, CommandLine& cl, Run& run) {
  CLI::App* region = app.add_subcommand("region", "regions of the store");
  region->require_subcommand(1);
  region->add_subcommand("list", "list regions")->callback([&cl, &run] {
    run = [&cl] {
      return WithStore(cl, [](Store& store) {
        for (const std::string& name : store.ListRegions()) std::printf("%s\n", name.c_str());
        return 0;
      });
    };
  });
  CLI::App* region_create = region->add_subcommand("create", "create a region");
  region_create->add_option("NAME", cl.region_name, "lowercase letters, digits and -")->required();
  region_create->callback([&cl, &run] {
    run = [&cl] {
      return WithStore(cl, [&cl](Store& store) {
        absl::StatusOr<Region*> made = store.CreateRegion(cl.region_name);
        return made.ok() ? 0 : Fail(made.status());
      });
    };
  });

  CLI::App* account = app.add_subcommand("account", "accounts and their access keys");
  account->require_subcommand(1);
  CLI::App* account_create = account->add_subcommand(
      "create", "create an account; prints its keys (through stratad's API while it runs)");
  account_create->add_option("NAME", cl.account_name, "the account's name")->required();
  account_create->callback([&cl, &run] {
    run = [&cl] {
      absl::StatusOr<std::unique_ptr<Store>> store = OpenStore(cl);
      if (!store.ok() && store.status().code() == absl::StatusCode::kFailedPrecondition) {
        return CreateAccountThroughApi(cl, cl.account_name);  // stratad has the store.
      }
      if (!store.ok()) return Fail(store.status());
      absl::StatusOr<Account> made = (*store)->CreateAccount(cl.account_name);
      if (!made.ok()) return Fail(made.status());
      PrintAccount(*made);
      return 0;
    };
  });
  account->add_subcommand("list", "list accounts and their keys")->callback([&cl, &run] {
    run = [&cl] {
      return WithStore(cl, [](Store& store) {
        for (const Account& a : store.ListAccounts()) PrintAccount(a);
        return 0;
      });
    };
  });
}

}  // namespace

void AddStoreCommands(CLI::App& app, CommandLine& cl, Run& run) {
  AddVolumeCommands(app, cl, run);
  AddSnapshotCommands(app, cl, run);
  AddRegionAndAccountCommands(app, cl, run);
  RegionCommand(app, "gc", "reclaim the space of deleted snapshots", cl, run,
                [](Region& region) -> absl::Status {
                  auto reclaimed = region.CollectGarbage();
                  if (!reclaimed.ok()) return reclaimed.status();
                  std::printf("reclaimed %llu bytes\n", (unsigned long long)*reclaimed);
                  return absl::OkStatus();
                });
  // stats: the chunk store's figures, on the store directly; stats VOL: a volume's I/O figures
  // through stratad's API (it keeps them).
  CLI::App* stats = app.add_subcommand(
      "stats",
      "the chunk store's counts and sizes; with VOL, the volume's I/O per second "
      "(CloudWatch's figures, from stratad)");
  stats->callback([&cl, &run] {
    run = [&cl] {
      if (!cl.volume_id.empty()) return VolumeStats(cl);
      return WithRegion(cl, [](Region& region) -> absl::Status {
        auto s = region.GetStats();
        if (!s.ok()) return s.status();
        std::printf(
            "chunks=%llu references=%llu stored_bytes=%llu segment_bytes=%llu "
            "segments=%llu\n",
            (unsigned long long)s->chunk_count, (unsigned long long)s->referenced_chunk_count,
            (unsigned long long)s->stored_bytes, (unsigned long long)s->segment_file_bytes,
            (unsigned long long)s->segment_count);
        return absl::OkStatus();
      });
    };
  });
  stats->add_option("VOL", cl.volume_id, "a volume id: its I/O figures");
  stats->add_option("--seconds", cl.seconds, "VOL: how many of the last seconds (default 10)")
      ->check(CLI::Range(1, 900));
}

}  // namespace strata::tools
