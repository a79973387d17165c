#include "region/task_queue.h"

#include <algorithm>
#include <vector>

#include "absl/time/time.h"

namespace strata::region {

void TaskQueue::Push(Task task) {
  absl::MutexLock lock(&mu_);
  queue_.push_back(std::move(task));
  cv_.Signal();
}

void TaskQueue::StartWorker() {
  worker_ = std::thread([this] { WorkerLoop(); });
}

void TaskQueue::StopWorker() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    cv_.SignalAll();
  }
  if (worker_.joinable()) worker_.join();
}

void TaskQueue::RunAll() {
  std::vector<Task> retries;  // Back in the queue once the rest has run.
  for (;;) {
    Task task;
    bool stopping = false;
    {
      absl::MutexLock lock(&mu_);
      if (queue_.empty()) {
        for (Task& retry : retries) queue_.push_back(std::move(retry));
        return;
      }
      task = std::move(queue_.front());
      queue_.pop_front();
      stopping = stopping_;
    }
    if (stopping && (task.kind == Task::Kind::kHydrate ||
                     task.kind == Task::Kind::kSweepRecycleBin || task.kind == Task::Kind::kTier)) {
      continue;  // They resume at the next open.
    }
    if (std::optional<Task> next = run_(std::move(task)); next.has_value()) {
      if (next->retry) {
        retries.push_back(std::move(*next));
        continue;
      }
      next->not_before_micros = 0;
      Push(std::move(*next));
    }
  }
}

void TaskQueue::WorkerLoop() {
  absl::MutexLock lock(&mu_);
  while (!stopping_) {
    const uint64_t now = env_->NowMicros();
    auto ready = std::find_if(queue_.begin(), queue_.end(),
                              [&](const Task& t) { return t.not_before_micros <= now; });
    if (ready == queue_.end()) {
      uint64_t wait_micros = 1000000;
      for (const Task& t : queue_) wait_micros = std::min(wait_micros, t.not_before_micros - now);
      cv_.WaitWithTimeout(&mu_, absl::Microseconds(wait_micros));
      continue;
    }
    Task task = std::move(*ready);
    queue_.erase(ready);
    mu_.Unlock();
    std::optional<Task> next = run_(std::move(task));
    mu_.Lock();
    if (next.has_value()) queue_.push_back(std::move(*next));
  }
}

}  // namespace strata::region
