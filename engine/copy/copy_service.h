#pragma once
// The destination side of cross-region copy (docs/regions.md). A copy asks the source for a
// manifest against the newest earlier copy of the same lineage it holds, writes the chunks
// that arrive into a direct snapshot built on that earlier copy, and completes the snapshot
// only when every chunk arrived and matched its digest. Streams reconnect and resume after a
// dropped link or a restarted source, re-requesting only chunks not yet verified.
//
// Every copy crosses the transfer protocol over a socket: a socketpair served by a thread of
// this process for a local source region, TCP for a peer region.

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "copy/copy_journal.h"
#include "copy/token_bucket.h"
#include "copy/transfer_messages.h"
#include "copy/transfer_tls.h"
#include "copy/transfer_wire.h"
#include "strata/store.h"

namespace strata::copy {

class CopyService {
 public:
  // `store` outlives the service; `journal_path` is DIR/copies.json.
  CopyService(Store& store, const StoreOptions& options, std::string journal_path);
  ~CopyService();  // Stops every copy (they fail: the store stopped) and joins the threads.

  // Resumes the copies the last process left pending (their direct snapshots stayed open);
  // marks failed those that cannot resume.
  absl::Status Load();
  absl::StatusOr<SnapshotInfo> Start(Region& destination, const CrossRegionCopyRequest& request);
  // An image of `source_region` as it describes it, if `account` may launch it.
  absl::StatusOr<ImageInfo> DescribeSourceImage(const std::string& source_region,
                                                const std::string& image_id,
                                                const std::string& account);
  absl::StatusOr<CopyRecord> Describe(const std::string& snapshot_id) const {
    return journal_.Get(snapshot_id);
  }
  std::vector<CopyRecord> List() const { return journal_.All(); }
  std::vector<std::string> PeerRegions() const;
  // Serves the source side on `fd` on the calling thread: a peer process's connection, in TLS
  // with a key of StoreOptions::transfer_psk_file, fault injection off.
  void ServeRemote(int fd);

  LinkModel LinkFor(const std::string& from, const std::string& to) const;

 private:
  struct Job;
  // A connection to `source_region`'s transfer service: local regions through a socketpair
  // and a serving thread, peers over TCP.
  absl::StatusOr<std::unique_ptr<Connection>> Connect(const std::string& source_region);
  // Serves a local region's side of a socketpair (Connect), in plaintext, faults as configured.
  void ServeLocal(int fd);
  // Runs a copy to its end, or until the store stops (then it stays pending and resumes at
  // the next start).
  void RunJob(std::shared_ptr<Job> job);
  // Gives back the bandwidth a time-based copy reserved.
  void Release(Job& job);
  // Trims the chunks the manifest lists as zeros and queues the others not yet done.
  absl::Status Plan(Job& job, const Manifest& manifest);
  // Starts `work` on a thread joined at destruction; joins the threads that finished.
  void SpawnLocked(std::function<void()> work) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // HELLO and OPEN on a new connection to `source`; the manifest and its digest.
  absl::StatusOr<std::pair<Manifest, std::string>> FetchManifest(const std::string& source,
                                                                 const std::string& account,
                                                                 const LinkModel& link,
                                                                 const Open& open);
  // A resumed copy's first step: the manifest again (same digest), then what is left to fetch.
  absl::Status Reopen(Job& job);
  absl::Status Transfer(Job& job);
  void Stream(Job& job, int stream_index);
  // HELLO and OPEN on a fresh connection; the manifest must be the one the copy started with.
  absl::Status OpenStream(Job& job, Connection& c, uint64_t seed);
  // Verifies an arrived chunk and writes it, or queues it again when it arrived damaged.
  absl::Status Land(Job& job, const ChunkFrame& chunk);
  void Requeue(Job& job, const std::set<uint64_t>& owed);
  void Finish(Job& job, const absl::Status& status);
  void SaveProgress(Job& job, bool force);
  TokenBucket& RegionBucket(const std::string& region, uint64_t rate);

  Store& store_;
  const std::map<std::string, std::string> peers_;
  const std::string transfer_psk_file_;
  std::unique_ptr<TransferTls> tls_;  // Set by Load when transfer_psk_file_ is given.
  const std::map<std::string, LinkModel> links_;
  const uint64_t retry_window_ms_;
  CopyJournal journal_;
  SharedBuckets sender_buckets_;      // The source side's, one per copy served.
  std::atomic<bool> stopped_{false};  // Ends the serving threads' waits on their buckets.

  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  struct Worker {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> finished;
  };
  std::vector<Worker> threads_ ABSL_GUARDED_BY(mu_);  // Jobs and local serving threads.
  std::vector<std::shared_ptr<Job>> jobs_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::unique_ptr<TokenBucket>> region_buckets_ ABSL_GUARDED_BY(mu_);
  // Bandwidth promised to time-based copies in flight, per destination region.
  std::map<std::string, uint64_t> reserved_ ABSL_GUARDED_BY(mu_);
};

}  // namespace strata::copy
