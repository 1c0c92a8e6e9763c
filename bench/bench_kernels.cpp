// Kernel benchmarks: the int8 GEMV of a decode step (weight bytes streamed per second, the figure to
// compare with the host's memory bandwidth) and the block GEMM of prefill.
#include <benchmark/benchmark.h>

#include <tbb/blocked_range.h>
#include <tbb/parallel_reduce.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <random>
#include <vector>

#include "chip/kernels.hpp"

namespace {

std::vector<int8_t> random_int8(std::size_t n) {
  std::mt19937 gen(42);
  std::uniform_int_distribution<int> d(-127, 127);
  std::vector<int8_t> v(n);
  for (auto& x : v) x = static_cast<int8_t>(d(gen));
  return v;
}

// The host's streaming-read bandwidth over a buffer far larger than the caches, with the same TBB threads
// the kernels use: the physical limit of a memory-bound GEMV.
void BM_StreamRead(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0)) / sizeof(uint64_t);
  std::vector<uint64_t> buffer(n);
  std::memset(buffer.data(), 1, n * sizeof(uint64_t));
  for (auto _ : state) {
    const uint64_t sum = tbb::parallel_reduce(
        tbb::blocked_range<std::size_t>(0, n, 1 << 16), uint64_t{0},
        [&](const tbb::blocked_range<std::size_t>& r, uint64_t s) {
          uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
          std::size_t i = r.begin();
          for (; i + 4 <= r.end(); i += 4) s0 += buffer[i], s1 += buffer[i + 1], s2 += buffer[i + 2], s3 += buffer[i + 3];
          for (; i < r.end(); ++i) s0 += buffer[i];
          return s + s0 + s1 + s2 + s3;
        },
        std::plus<uint64_t>());
    benchmark::DoNotOptimize(sum);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * state.range(0));
}
BENCHMARK(BM_StreamRead)->Arg(int64_t{512} << 20)->UseRealTime();

void BM_GemvInt8(benchmark::State& state) {
  const int64_t rows = state.range(0), cols = state.range(1);
  const auto w = random_int8(static_cast<std::size_t>(rows * cols));
  const auto q = random_int8(static_cast<std::size_t>(cols));
  std::vector<int32_t> acc(static_cast<std::size_t>(rows));
  for (auto _ : state) {
    lpurt::chip::gemv_int8(w.data(), rows, cols, q.data(), acc.data());
    benchmark::DoNotOptimize(acc.data());
  }
  state.SetBytesProcessed(state.iterations() * rows * cols);
  state.SetLabel(lpurt::chip::int8_kernel_name());
}
// 768x768 (small's attention), 2048x768 (small's FFN), 8192x8192 = 64 MB and 16384x8192 = 128 MB (beyond
// every cache).
BENCHMARK(BM_GemvInt8)->Args({768, 768})->Args({2048, 768})->Args({8192, 8192})->Args({16384, 8192})->UseRealTime();

void BM_GemmInt8(benchmark::State& state) {
  const int64_t rows = 2048, cols = 768, n = state.range(0);
  const auto w = random_int8(static_cast<std::size_t>(rows * cols));
  const auto q = random_int8(static_cast<std::size_t>(n * cols));
  std::vector<int32_t> acc(static_cast<std::size_t>(n * rows));
  for (auto _ : state) {
    lpurt::chip::gemm_int8(w.data(), rows, cols, q.data(), n, acc.data());
    benchmark::DoNotOptimize(acc.data());
  }
  state.counters["MAC/s"] = benchmark::Counter(static_cast<double>(state.iterations() * rows * cols * n),
                                               benchmark::Counter::kIsRate);
}
BENCHMARK(BM_GemmInt8)->Arg(1)->Arg(16)->Arg(64)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
