// Kernel benchmarks: the int8 GEMV of a decode step (weight bytes streamed per second, the figure to
// compare with the host's memory bandwidth) and the block GEMM of prefill.
#include <benchmark/benchmark.h>

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
}
// 768x768 (small's attention), 2048x768 (small's FFN), 8192x8192 = 64 MB (beyond every cache).
BENCHMARK(BM_GemvInt8)->Args({768, 768})->Args({2048, 768})->Args({8192, 8192})->UseRealTime();

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
