// torch_parallel_for with at::parallel_for's semantics, on a small pool of std::threads:
// [begin, end) is split into at most one chunk per thread, none smaller than `grain` unless
// it is the whole range; a range of at most `grain` items, or a call from inside a parallel
// region, runs on the calling thread. An exception in a chunk is caught on the thread that
// ran it, and the first one is reported to the caller as a failure.

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

#include "internal.h"

using namespace kt;

namespace {

typedef void (*ParallelFunc)(int64_t begin, int64_t end, void* ctx);

std::atomic<uint32_t> g_requested_threads{0};
std::atomic<uint64_t> g_calls{0};
std::atomic<uint64_t> g_split_calls{0};
thread_local bool t_in_parallel = false;
thread_local uint32_t t_thread_idx = 0;

uint32_t thread_count() {
  uint32_t n = g_requested_threads.load(std::memory_order_relaxed);
  // hardware_concurrency reads sysfs on every call: ask once.
  static const uint32_t hardware = std::thread::hardware_concurrency();
  if (n == 0) n = hardware;
  return n == 0 ? 1 : n;
}

// Workers that run queued tasks; created on demand and never destroyed (a process may exit
// with workers waiting).
class Pool {
 public:
  void run(std::function<void()> task) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      // One idle worker per queued task; start one more if none is left for this task.
      if (tasks_.size() >= idle_) {
        std::thread(&Pool::work, this).detach();
        ++workers_;
      }
      tasks_.push_back(std::move(task));
    }
    ready_.notify_one();
  }

 private:
  void work() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      ++idle_;
      ready_.wait(lock, [this] { return !tasks_.empty(); });
      --idle_;
      std::function<void()> task = std::move(tasks_.front());
      tasks_.pop_front();
      lock.unlock();
      task();
      lock.lock();
    }
  }

  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::function<void()>> tasks_;
  uint32_t idle_ = 0;
  uint32_t workers_ = 0;
};

Pool& pool() {
  static Pool* p = new Pool();
  return *p;
}

// The first failure of a parallel call, and how many chunks are still running.
struct Join {
  std::mutex mutex;
  std::condition_variable done;
  int64_t pending = 0;
  bool failed = false;
  std::string message;

  void finish(bool ok, std::string error) {
    std::lock_guard<std::mutex> lock(mutex);
    if (!ok && !failed) {
      failed = true;
      message = std::move(error);
    }
    if (--pending == 0) done.notify_all();
  }
};

// Runs one chunk with its thread marked as inside a parallel region; never throws.
void run_chunk(ParallelFunc fn, void* ctx, int64_t b, int64_t e, uint32_t idx, Join& join) noexcept {
  bool was_in = t_in_parallel;
  uint32_t was_idx = t_thread_idx;
  t_in_parallel = true;
  t_thread_idx = idx;
  bool ok = true;
  std::string error;
  try {
    fn(b, e, ctx);
  } catch (...) {
    ok = false;
    try {
      error = current_exception_message();
    } catch (...) {
    }
  }
  t_in_parallel = was_in;
  t_thread_idx = was_idx;
  join.finish(ok, std::move(error));
}

}  // namespace

KT_EXPORT int32_t torch_parallel_for(int64_t begin, int64_t end, int64_t grain, ParallelFunc fn, void* ctx) {
  g_calls.fetch_add(1, std::memory_order_relaxed);
  if (fn == nullptr) return fail("torch_parallel_for: null function");
  if (grain < 0) return fail("torch_parallel_for: negative grain size " + std::to_string(grain));
  if (begin >= end) return KT_OK;
  int64_t range = end - begin;
  int64_t step_min = std::max<int64_t>(grain, 1);
  int64_t chunks = t_in_parallel || range <= grain ? 1 : std::min<int64_t>(thread_count(), (range + step_min - 1) / step_min);
  Join join;
  if (chunks <= 1) {
    join.pending = 1;
    run_chunk(fn, ctx, begin, end, t_in_parallel ? t_thread_idx : 0, join);
  } else {
    g_split_calls.fetch_add(1, std::memory_order_relaxed);
    int64_t step = (range + chunks - 1) / chunks;
    chunks = (range + step - 1) / step;
    join.pending = chunks;
    int64_t next = 1;  // the first chunk not handed to the pool
    try {
      for (; next < chunks; ++next) {
        int64_t b = begin + next * step, e = std::min(end, b + step);
        uint32_t idx = static_cast<uint32_t>(next);
        pool().run([=, &join] { run_chunk(fn, ctx, b, e, idx, join); });
      }
    } catch (...) {
      // No thread could take the rest (out of memory or threads): run it here.
      for (; next < chunks; ++next) {
        int64_t b = begin + next * step;
        run_chunk(fn, ctx, b, std::min(end, b + step), 0, join);
      }
    }
    run_chunk(fn, ctx, begin, std::min(end, begin + step), 0, join);
    std::unique_lock<std::mutex> lock(join.mutex);
    join.done.wait(lock, [&] { return join.pending == 0; });
  }
  if (join.failed) return fail("torch_parallel_for: " + join.message);
  return KT_OK;
}

KT_EXPORT int32_t torch_get_num_threads(uint32_t* ret) {
  return guarded("torch_get_num_threads", [&] { *ret = thread_count(); });
}

KT_EXPORT int32_t torch_get_thread_idx(uint32_t* ret) {
  return guarded("torch_get_thread_idx", [&] { *ret = t_in_parallel ? t_thread_idx : 0; });
}

KT_EXPORT void kernels_torch_host_set_num_threads(uint32_t threads) {
  g_requested_threads.store(threads, std::memory_order_relaxed);
}

KT_EXPORT uint64_t kernels_torch_host_parallel_for_calls(void) { return g_calls.load(); }
KT_EXPORT uint64_t kernels_torch_host_parallel_for_split_calls(void) { return g_split_calls.load(); }
