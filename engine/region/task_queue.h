#pragma once
// A region's background work: snapshot ingests (in creation order), prunes of deleted snapshots,
// hydration slices, sweeps of the Recycle Bin and the archive tier's work, queued here and run by
// one worker thread (or, at a stop, by the caller).

#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "strata/env.h"
#include "volume/volume_impl.h"

namespace strata::region {

struct Task {
  enum class Kind { kIngest, kPrune, kHydrate, kSweepRecycleBin, kTier };
  Kind kind = Kind::kIngest;
  std::string id;  // Snapshot (ingest, prune, tier) or volume (hydrate).
  std::shared_ptr<volume::PendingSnapshot> pending;  // kIngest only.
  uint64_t not_before_micros = 0;                    // Runs no earlier than this.
  // A retry after an error (e.g. hydration paused by an I/O error): RunAll leaves it queued
  // for later instead of running it again at once, so a lasting error cannot hold RunAll.
  bool retry = false;
};

// Thread-safe. `env` must outlive it; `run` is called on the worker (or the caller of RunAll)
// with no lock of the queue held, and returns a follow-up task to queue, if any.
class TaskQueue {
 public:
  using Runner = std::function<std::optional<Task>(Task)>;
  TaskQueue(Env* env, Runner run) : env_(env), run_(std::move(run)) {}
  ~TaskQueue() { StopWorker(); }
  TaskQueue(const TaskQueue&) = delete;
  TaskQueue& operator=(const TaskQueue&) = delete;

  void Push(Task task);
  // Starts the worker thread, which runs each task once its time has come.
  void StartWorker();
  // Stops the worker (after the task it runs) and joins it. Later, hydrations, sweeps of the
  // Recycle Bin and tiering are left for the next open (their state is persisted) and every
  // other task runs in RunAll.
  void StopWorker();
  // Runs every queued task on the calling thread, follow-ups at once, until none is left but
  // retries (which stay queued). Bounded: each task finishes, is a hydration that advances by at
  // least one chunk, or is a retry.
  void RunAll();

 private:
  void WorkerLoop();

  Env* const env_;
  const Runner run_;
  absl::Mutex mu_;  // Never held while a task runs.
  absl::CondVar cv_;
  std::deque<Task> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread worker_;
};

}  // namespace strata::region
