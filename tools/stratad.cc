// stratad: the Strata daemon. Opens the store and keeps it open until SIGTERM or SIGINT, then
// stops cleanly (pending snapshots complete, volumes flush). Later issues add the NBD server
// and the AWS-compatible API to this process.

#include <csignal>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "cli_args.h"
#include "strata/store.h"
#include "util/log.h"

namespace {

constexpr char kUsage[] =
    "usage: stratad [--data-dir DIR] [--chunk-size SIZE] [--compression]\n"
    "  --data-dir DIR     store directory (default ./data; created if missing)\n"
    "  --chunk-size SIZE  chunk size of a new store, 4K..4M (default 64K)\n"
    "  --compression      compress snapshot chunks with zstd\n";

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "stratad: %s\n", std::string(s.message()).c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  auto args = strata::tools::Args::Parse(argc, argv, 1, {"data-dir", "chunk-size"},
                                         {"compression", "help"});
  if (!args.ok()) {
    std::fprintf(stderr, "stratad: %s\n%s", std::string(args.status().message()).c_str(), kUsage);
    return 2;
  }
  if (args->Has("help")) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (!args->positional().empty()) {
    std::fprintf(stderr, "stratad: unexpected argument %s\n%s", args->positional()[0].c_str(), kUsage);
    return 2;
  }
  strata::StoreOptions options;
  auto chunk = args->GetSize("chunk-size", strata::kChunkSizeBytesDefault);
  if (!chunk.ok()) return Fail(chunk.status());
  options.chunk_size_bytes = *chunk;
  options.compression = args->Has("compression");
  const std::string dir = args->Get("data-dir", "./data");

  // Block the stop signals before any thread starts, then wait for one synchronously.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);

  auto store = strata::Store::Open(dir, options);
  if (!store.ok()) return Fail(store.status());
  for (const std::string& name : (*store)->ListRegions()) {
    auto region = *(*store)->GetRegion(name);
    auto volumes = region->ListVolumes();
    auto snapshots = region->ListSnapshots();
    STRATA_LOG(kInfo, "region ", name, ": ", volumes.ok() ? volumes->size() : 0, " volumes, ",
               snapshots.ok() ? snapshots->size() : 0, " snapshots, chunk size ",
               region->chunk_size_bytes());
  }
  STRATA_LOG(kInfo, "stratad serving store ", dir, " (pid ", getpid(), "); SIGTERM or Ctrl-C stops");
  int signal = 0;
  sigwait(&stop, &signal);
  STRATA_LOG(kInfo, "signal ", signal, ": stopping cleanly");
  store->reset();
  STRATA_LOG(kInfo, "stopped");
  return 0;
}
