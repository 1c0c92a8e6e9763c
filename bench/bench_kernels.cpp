// Kernel benchmarks: the int8 GEMV of a decode step (weight bytes streamed per second, the figure to
// compare with the host's memory bandwidth) and the block GEMM of prefill.
#include <benchmark/benchmark.h>

#include <immintrin.h>
#include <tbb/blocked_range.h>
#include <tbb/parallel_reduce.h>

#include <cstdint>
#include <algorithm>
#include <cstring>
#include <functional>
#include <random>
#include <vector>

#include "chip/kernels.hpp"
#include "chip/shard.hpp"

namespace {

std::vector<int8_t> random_int8(std::size_t n) {
  std::mt19937 gen(42);
  std::uniform_int_distribution<int> d(-127, 127);
  std::vector<int8_t> v(n);
  for (auto& x : v) x = static_cast<int8_t>(d(gen));
  return v;
}

// Sums a range with 32-byte loads (as the AVX2 kernels read), so that the loop itself is never the limit.
__attribute__((target("avx2"))) uint64_t sum_avx2(const uint64_t* p, std::size_t n) {
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  std::size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    a0 = _mm256_add_epi64(a0, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i)));
    a1 = _mm256_add_epi64(a1, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 4)));
    a2 = _mm256_add_epi64(a2, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 8)));
    a3 = _mm256_add_epi64(a3, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 12)));
  }
  alignas(32) uint64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3)));
  uint64_t s = lanes[0] + lanes[1] + lanes[2] + lanes[3];
  for (; i < n; ++i) s += p[i];
  return s;
}

uint64_t sum_portable(const uint64_t* p, std::size_t n) {
  uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  std::size_t i = 0;
  for (; i + 4 <= n; i += 4) s0 += p[i], s1 += p[i + 1], s2 += p[i + 2], s3 += p[i + 3];
  for (; i < n; ++i) s0 += p[i];
  return s0 + s1 + s2 + s3;
}

// The host's streaming-read bandwidth over a buffer far larger than the caches, with the same TBB threads
// the kernels use: the physical limit of a memory-bound GEMV. The buffer is a chip::WeightArena, on the
// same (huge) pages as the weights, so that the limit is the best the memory can do.
void BM_StreamRead(benchmark::State& state) {
  const bool avx2 = __builtin_cpu_supports("avx2") != 0;
  const auto n = static_cast<std::size_t>(state.range(0)) / sizeof(uint64_t);
  const lpurt::chip::WeightArena arena(state.range(0));
  auto* buffer = reinterpret_cast<uint64_t*>(arena.data());
  // Distinct contents on every page: a hypervisor that merges identical pages (KSM) would otherwise back
  // the whole buffer with one physical page and the "stream" would run from the caches.
  uint64_t lcg = 0x9e3779b97f4a7c15ull;
  for (std::size_t i = 0; i < n; ++i) buffer[i] = lcg = lcg * 6364136223846793005ull + 1442695040888963407ull;
  for (auto _ : state) {
    const uint64_t sum = tbb::parallel_reduce(
        tbb::blocked_range<std::size_t>(0, n, 1 << 16), uint64_t{0},
        [&](const tbb::blocked_range<std::size_t>& r, uint64_t s) {
          const uint64_t* p = buffer + r.begin();
          return s + (avx2 ? sum_avx2(p, r.size()) : sum_portable(p, r.size()));
        },
        std::plus<uint64_t>());
    benchmark::DoNotOptimize(sum);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * state.range(0));
}
BENCHMARK(BM_StreamRead)->Arg(int64_t{512} << 20)->UseRealTime();

void BM_GemvInt8(benchmark::State& state) {
  const int64_t rows = state.range(0), cols = state.range(1);
  // In a WeightArena, as a chip's weights are.
  const lpurt::chip::WeightArena arena(rows * cols);
  const auto values = random_int8(static_cast<std::size_t>(rows * cols));
  std::copy(values.begin(), values.end(), arena.data());
  const int8_t* w = arena.data();
  const auto q = random_int8(static_cast<std::size_t>(cols));
  std::vector<int32_t> acc(static_cast<std::size_t>(rows));
  for (auto _ : state) {
    lpurt::chip::gemv_int8(w, rows, cols, q.data(), acc.data());
    benchmark::DoNotOptimize(acc.data());
  }
  state.SetBytesProcessed(state.iterations() * rows * cols);
  state.SetLabel(lpurt::chip::int8_kernel_name());
}
// 768x768 (small's attention), 2048x768 (small's FFN), then 64, 128 and 256 MB (beyond the 32 MiB L3 of the
// machine the reports were made on; 64 MB can still partly hit it).
BENCHMARK(BM_GemvInt8)
    ->Args({768, 768})
    ->Args({2048, 768})
    ->Args({8192, 8192})
    ->Args({16384, 8192})
    ->Args({32768, 8192})
    ->UseRealTime();

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
