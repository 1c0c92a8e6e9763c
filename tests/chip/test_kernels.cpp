#include <gtest/gtest.h>
#include <tbb/global_control.h>

#include <cmath>
#include <cstring>
#include <random>
#include <utility>
#include <vector>

#include "chip/kernels.hpp"

using namespace lpurt::chip;

namespace {

std::vector<int8_t> random_int8(std::size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int> d(-127, 127);
  std::vector<int8_t> v(n);
  for (auto& x : v) x = static_cast<int8_t>(d(gen));
  return v;
}

std::vector<int32_t> naive_gemv(const std::vector<int8_t>& w, int64_t rows, int64_t cols, const int8_t* q) {
  std::vector<int32_t> acc(static_cast<std::size_t>(rows));
  for (int64_t j = 0; j < rows; ++j) {
    int64_t s = 0;
    for (int64_t k = 0; k < cols; ++k) s += int64_t{w[static_cast<std::size_t>(j * cols + k)]} * q[k];
    acc[static_cast<std::size_t>(j)] = static_cast<int32_t>(s);
  }
  return acc;
}

}  // namespace

TEST(Quantize, AllZeroVectorGivesScaleOneAndZeros) {
  std::vector<float> v(7, 0.0f);
  std::vector<int8_t> q(7, 5);
  EXPECT_EQ(max_abs(v.data(), 7), 0.0f);
  EXPECT_EQ(quantization_scale(0.0f), 1.0f);
  quantize(v.data(), 7, 0.0f, q.data());
  for (int8_t x : q) EXPECT_EQ(x, 0);
}

TEST(Quantize, LargestMagnitudeMapsToPlusMinus127) {
  const std::vector<float> v = {-3.5f, 1.0f, 3.5f, 0.0f};
  std::vector<int8_t> q(4);
  quantize(v.data(), 4, max_abs(v.data(), 4), q.data());
  EXPECT_EQ(q[0], -127);
  EXPECT_EQ(q[2], 127);
  EXPECT_EQ(q[3], 0);
  EXPECT_EQ(q[1], static_cast<int8_t>(std::rint(1.0f / (3.5f / 127.0f))));
}

TEST(Quantize, TiesRoundHalfToEven) {
  // amax = 127 gives s = 1 exactly, so v / s = v and the .5 cases are exact ties.
  const std::vector<float> v = {127.0f, 0.5f, 1.5f, 2.5f, -0.5f, -1.5f, -2.5f, 126.5f};
  std::vector<int8_t> q(v.size());
  quantize(v.data(), static_cast<int64_t>(v.size()), 127.0f, q.data());
  const std::vector<int8_t> expected = {127, 0, 2, 2, 0, -2, -2, 126};
  EXPECT_EQ(q, expected);
}

TEST(Quantize, ClampsToSymmetricRange) {
  // A caller-supplied amax smaller than the data (never happens with a true max) still clamps at +-127.
  const std::vector<float> v = {10.0f, -10.0f};
  std::vector<int8_t> q(2);
  quantize(v.data(), 2, 1.0f, q.data());
  EXPECT_EQ(q[0], 127);
  EXPECT_EQ(q[1], -127);
}

TEST(Gemv, MatchesWideningReferenceAtExtremeValues) {
  // All +-127: the largest possible partial sums must stay exact in int32.
  const int64_t rows = 33, cols = 4099;
  std::vector<int8_t> w(static_cast<std::size_t>(rows * cols), 127), q(static_cast<std::size_t>(cols), 127);
  for (int64_t j = 0; j < rows; j += 2)
    for (int64_t k = 0; k < cols; ++k) w[static_cast<std::size_t>(j * cols + k)] = -127;
  std::vector<int32_t> acc(static_cast<std::size_t>(rows));
  gemv_int8(w.data(), rows, cols, q.data(), acc.data());
  EXPECT_EQ(acc, naive_gemv(w, rows, cols, q.data()));
  EXPECT_EQ(acc[1], 127 * 127 * cols);
  EXPECT_EQ(acc[0], -127 * 127 * cols);
}

TEST(Gemv, RandomMatchesReference) {
  const int64_t rows = 517, cols = 300;
  auto w = random_int8(static_cast<std::size_t>(rows * cols), 1);
  auto q = random_int8(static_cast<std::size_t>(cols), 2);
  std::vector<int32_t> acc(static_cast<std::size_t>(rows));
  gemv_int8(w.data(), rows, cols, q.data(), acc.data());
  EXPECT_EQ(acc, naive_gemv(w, rows, cols, q.data()));
}

TEST(Gemm, EveryTokenEqualsItsGemv) {
  const int64_t rows = 129, cols = 77, n = 5;
  auto w = random_int8(static_cast<std::size_t>(rows * cols), 3);
  auto q = random_int8(static_cast<std::size_t>(n * cols), 4);
  std::vector<int32_t> acc(static_cast<std::size_t>(n * rows)), one(static_cast<std::size_t>(rows));
  gemm_int8(w.data(), rows, cols, q.data(), n, acc.data());
  for (int64_t t = 0; t < n; ++t) {
    gemv_int8(w.data(), rows, cols, q.data() + t * cols, one.data());
    EXPECT_TRUE(std::equal(one.begin(), one.end(), acc.begin() + t * rows)) << "token " << t;
  }
}

TEST(Gemv, ResultDoesNotDependOnThreadCount) {
  const int64_t rows = 4096, cols = 512;
  auto w = random_int8(static_cast<std::size_t>(rows * cols), 5);
  auto q = random_int8(static_cast<std::size_t>(cols), 6);
  std::vector<int32_t> one_thread(static_cast<std::size_t>(rows)), two_threads(static_cast<std::size_t>(rows));
  {
    tbb::global_control limit(tbb::global_control::max_allowed_parallelism, 1);
    gemv_int8(w.data(), rows, cols, q.data(), one_thread.data());
  }
  {
    tbb::global_control limit(tbb::global_control::max_allowed_parallelism, 2);
    gemv_int8(w.data(), rows, cols, q.data(), two_threads.data());
  }
  EXPECT_EQ(one_thread, two_threads);
}

TEST(Dequantize, AppliesActivationThenRowScaleInSpecOrder) {
  const std::vector<int32_t> acc = {1000, -7, 0};
  const std::vector<float> row_scale = {0.01f, 0.5f, 3.0f};
  std::vector<float> y(3);
  const float amax = 2.54f;
  dequantize(acc.data(), 3, amax, row_scale.data(), y.data());
  const float s = amax / 127.0f;
  for (int j = 0; j < 3; ++j) EXPECT_EQ(y[j], (static_cast<float>(acc[j]) * s) * row_scale[j]);
  std::vector<float> x = {1.0f, 1.0f, 1.0f};
  dequantize_add(acc.data(), 3, amax, row_scale.data(), x.data());
  for (int j = 0; j < 3; ++j) EXPECT_EQ(x[j], 1.0f + y[j]);
}

TEST(RmsNorm, MatchesDefinition) {
  const std::vector<float> x = {1.0f, -2.0f, 3.0f, 0.5f};
  const std::vector<float> g = {1.0f, 0.5f, 2.0f, 1.0f};
  std::vector<float> out(4);
  rmsnorm(x.data(), g.data(), 4, 1e-5f, out.data());
  const float ss = 1.0f + 4.0f + 9.0f + 0.25f;
  const float inv = 1.0f / std::sqrt(ss / 4.0f + 1e-5f);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(out[i], x[i] * inv * g[i]);
}

TEST(Rope, PositionZeroIsIdentityAndRotationPreservesNorm) {
  const int64_t hd = 8, positions = 5;
  std::vector<float> c(static_cast<std::size_t>(positions * hd / 2)), s(c.size()), freq(hd / 2);
  rope_frequencies(hd, 10000.0f, RopeScaling{}, freq.data());
  rope_table(positions, hd / 2, freq.data(), c.data(), s.data());
  std::vector<float> v = {1, 2, 3, 4, 5, 6, 7, 8}, v0 = v;
  rope_apply(v.data(), 1, hd, c.data(), s.data());
  EXPECT_EQ(v, v0);
  rope_apply(v.data(), 1, hd, c.data() + 3 * hd / 2, s.data() + 3 * hd / 2);
  // Pair 0 rotates by angle 3 (theta^0 = 1): (1, 2) -> (cos3 - 2 sin3, sin3 + 2 cos3).
  EXPECT_FLOAT_EQ(v[0], std::cos(3.0f) - 2.0f * std::sin(3.0f));
  EXPECT_FLOAT_EQ(v[1], std::sin(3.0f) + 2.0f * std::cos(3.0f));
  for (int i = 0; i < 4; ++i)
    EXPECT_NEAR(v[2 * i] * v[2 * i] + v[2 * i + 1] * v[2 * i + 1],
                v0[2 * i] * v0[2 * i] + v0[2 * i + 1] * v0[2 * i + 1], 1e-4);
}

TEST(Attention, SinglePositionReturnsItsValue) {
  const std::vector<float> q = {0.3f, -1.0f}, k = {2.0f, 1.0f}, v = {4.0f, -5.0f};
  std::vector<float> scores(1), out(2);
  attention_head(q.data(), k.data(), v.data(), 1, 2, scores.data(), out.data());
  EXPECT_EQ(out[0], 4.0f);
  EXPECT_EQ(out[1], -5.0f);
}

TEST(Attention, EqualScoresAverageValues) {
  const std::vector<float> q = {0.0f, 0.0f}, k = {1, 2, 3, 4}, v = {1.0f, 2.0f, 3.0f, 6.0f};
  std::vector<float> scores(2), out(2);
  attention_head(q.data(), k.data(), v.data(), 2, 2, scores.data(), out.data());
  EXPECT_FLOAT_EQ(out[0], 2.0f);
  EXPECT_FLOAT_EQ(out[1], 4.0f);
}

TEST(Argmax, TiesGoToLowestIndex) {
  const std::vector<float> v = {1.0f, 3.0f, 2.0f, 3.0f};
  EXPECT_EQ(argmax(v.data(), 4), 1);
}

TEST(Router, TopKTiesGoToLowerIndexAndWeightsSumToOne) {
  // Router rows chosen so that experts 1, 2 and 3 tie on the logit 2.0 and expert 0 scores 1.0.
  const int64_t dim = 2, n_experts = 4, k = 2;
  const std::vector<float> router = {1, 0, 2, 0, 2, 0, 2, 0};
  const std::vector<float> h = {1.0f, 0.0f};
  std::vector<float> logits(n_experts), weights(k);
  std::vector<int32_t> experts(k);
  route_top_k(router.data(), h.data(), n_experts, dim, k, true, logits.data(), experts.data(), weights.data());
  EXPECT_EQ(experts[0], 1);
  EXPECT_EQ(experts[1], 2);
  EXPECT_FLOAT_EQ(weights[0], 0.5f);
  EXPECT_FLOAT_EQ(weights[0] + weights[1], 1.0f);
}

TEST(Router, WithoutNormTopkProbTheWeightsAreTheFullSoftmaxAtTheChosen) {
  // Logits 1, 2, 2, 2: the full softmax gives e^2 / (e + 3 e^2) to each of experts 1 and 2.
  const int64_t dim = 2, n_experts = 4, k = 2;
  const std::vector<float> router = {1, 0, 2, 0, 2, 0, 2, 0};
  const std::vector<float> h = {1.0f, 0.0f};
  std::vector<float> logits(n_experts), weights(k);
  std::vector<int32_t> experts(k);
  route_top_k(router.data(), h.data(), n_experts, dim, k, false, logits.data(), experts.data(), weights.data());
  EXPECT_EQ(experts[0], 1);
  EXPECT_EQ(experts[1], 2);
  const double expected = std::exp(2.0) / (std::exp(1.0) + 3 * std::exp(2.0));
  EXPECT_NEAR(weights[0], expected, 1e-6);
  EXPECT_EQ(weights[0], weights[1]);
}

TEST(Rope, Llama3ScalingKeepsHighFrequenciesDividesLowOnesAndBlendsBetween) {
  // tiny-llama3's table: hd 16, theta 5e5, factor 8, low 1, high 4, original 64: wavelengths below 16
  // keep f, above 64 get f / 8, between blend.
  const int64_t hd = 16;
  const RopeScaling scaling{RopeScalingType::llama3, 8.0, 1.0, 4.0, 64};
  std::vector<float> plain(hd / 2), scaled(hd / 2);
  rope_frequencies(hd, 500000.0f, RopeScaling{}, plain.data());
  rope_frequencies(hd, 500000.0f, scaling, scaled.data());
  int kept = 0, divided = 0, blended = 0;
  for (int64_t i = 0; i < hd / 2; ++i) {
    const double f = std::pow(500000.0, -2.0 * static_cast<double>(i) / hd), wavelength = 2 * M_PI / f;
    const float got = scaled[static_cast<std::size_t>(i)];
    if (wavelength < 16) {
      EXPECT_EQ(got, plain[static_cast<std::size_t>(i)]);
      ++kept;
    } else if (wavelength > 64) {
      EXPECT_EQ(got, static_cast<float>(f / 8));
      ++divided;
    } else {
      const double s = (64 / wavelength - 1) / 3;
      EXPECT_EQ(got, static_cast<float>((1 - s) * f / 8 + s * f));
      EXPECT_LT(got, plain[static_cast<std::size_t>(i)]);
      EXPECT_GT(got, plain[static_cast<std::size_t>(i)] / 8);
      ++blended;
    }
  }
  EXPECT_GT(kept, 0);
  EXPECT_GT(divided, 0);
  EXPECT_GT(blended, 0);
}

TEST(Silu, MatchesDefinition) {
  const std::vector<float> g = {-2.0f, 0.0f, 3.0f}, u = {1.0f, 5.0f, 0.5f};
  std::vector<float> out(3);
  silu_mul(g.data(), u.data(), 3, out.data());
  for (int i = 0; i < 3; ++i) EXPECT_EQ(out[i], g[i] / (1.0f + std::exp(-g[i])) * u[i]);
}

TEST(FastKernels, EqualThePortableReferenceBitForBitAtEveryThreadCount) {
  // Odd shapes exercise every tail: rows not a multiple of 4, columns not a multiple of 32.
  for (auto [rows, cols] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {3, 31}, {5, 33}, {4, 32}, {131, 97},
                                                                     {1027, 4099}, {4096, 768}}) {
    auto w = random_int8(static_cast<std::size_t>(rows * cols), static_cast<uint32_t>(rows));
    auto q = random_int8(static_cast<std::size_t>(cols), static_cast<uint32_t>(cols));
    std::vector<int32_t> reference(static_cast<std::size_t>(rows));
    gemv_int8_portable(w.data(), rows, cols, q.data(), reference.data());
    EXPECT_EQ(reference, naive_gemv(w, rows, cols, q.data()));
    for (int threads : {1, 2, 3}) {
      tbb::global_control limit(tbb::global_control::max_allowed_parallelism, static_cast<std::size_t>(threads));
      std::vector<int32_t> fast(static_cast<std::size_t>(rows));
      gemv_int8(w.data(), rows, cols, q.data(), fast.data());
      EXPECT_EQ(fast, reference) << rows << "x" << cols << " on " << threads << " threads (" << int8_kernel_name() << ")";
      std::vector<int32_t> block(static_cast<std::size_t>(3 * rows));
      std::vector<int8_t> q3(q);
      q3.insert(q3.end(), q.begin(), q.end());
      q3.insert(q3.end(), q.begin(), q.end());
      gemm_int8(w.data(), rows, cols, q3.data(), 3, block.data());
      for (int t = 0; t < 3; ++t)
        EXPECT_TRUE(std::equal(reference.begin(), reference.end(), block.begin() + t * rows)) << rows << "x" << cols;
    }
  }
}

TEST(FastKernels, ExtremeValuesNeverSaturate) {
  // +-127 everywhere: every pair sum is +-32258, the widest a 16-bit intermediate could not hold twice.
  const int64_t rows = 9, cols = 130'000;  // near the largest inner dimension lpurt accepts
  for (int8_t sign : {int8_t{127}, int8_t{-127}}) {
    std::vector<int8_t> w(static_cast<std::size_t>(rows * cols), 127), q(static_cast<std::size_t>(cols), sign);
    for (int64_t k = 0; k < cols; k += 3) q[static_cast<std::size_t>(k)] = -127;
    std::vector<int32_t> fast(static_cast<std::size_t>(rows)), reference(static_cast<std::size_t>(rows));
    gemv_int8(w.data(), rows, cols, q.data(), fast.data());
    gemv_int8_portable(w.data(), rows, cols, q.data(), reference.data());
    EXPECT_EQ(fast, reference);
    EXPECT_EQ(reference, naive_gemv(w, rows, cols, q.data()));
  }
}
