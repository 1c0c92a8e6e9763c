#include <gtest/gtest.h>

#include <chrono>
#include <string>

#include "partition/plan.hpp"
#include "partition/request.hpp"

using namespace lpurt;
using namespace lpurt::partition;

namespace {
/// The message of the error `make_plan` throws for `r`, which must come at once: no value may make the
/// planner work in proportion to it before refusing it.
template <typename E>
std::string refusal(const PlanRequest& r, const chip::ChipSpec& hw = {}) {
  const auto t0 = std::chrono::steady_clock::now();
  std::string message;
  try {
    make_plan(chip::model_preset("tiny"), hw, r);
    ADD_FAILURE() << "make_plan accepted the request";
  } catch (const E& e) {
    message = e.what();
  }
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 1.0) << message;
  return message;
}
PlanRequest chips(int64_t n) {
  PlanRequest r;
  r.n_chips = n;
  return r;
}
}  // namespace

TEST(Request, ChipsBeyondTheTopologyFailAtOnce) {
  for (int64_t n : {int64_t{10'441}, int64_t{10'000'000}, int64_t{1} << 40, INT64_MAX}) {
    const std::string m = refusal<PlanError>(chips(n));
    EXPECT_NE(m.find("--chips " + std::to_string(n)), std::string::npos) << m;
    EXPECT_NE(m.find("at most 10440 chips"), std::string::npos) << m;
  }
  chip::ChipSpec chain;
  chain.topology = "chain";
  const std::string m = refusal<PlanError>(chips(int64_t{1} << 40), chain);
  EXPECT_NE(m.find("the chain topology holds at most 10440 chips"), std::string::npos) << m;
  EXPECT_EQ(max_chips("dragonfly"), Topology::max_dragonfly_chips);
  EXPECT_EQ(max_chips("chain"), Topology::max_chain_chips);
}

TEST(Request, AbsurdBatchFailsAtOnceNamingWhatFits) {
  PlanRequest r = chips(2);
  r.batch = int64_t{1} << 40;
  const std::string m = refusal<chip::CapacityError>(r);
  EXPECT_NE(m.find("--batch 1099511627776 cannot fit"), std::string::npos) << m;
  r.batch = max_batch_bound(chip::model_preset("tiny"), {}, 2, chip::model_preset("tiny").max_seq_len);
  EXPECT_GT(r.batch, 1);
  EXPECT_NO_THROW(check_request(chip::model_preset("tiny"), {}, r));
}

TEST(Request, LayoutValuesMustBeInRange) {
  for (const auto& [field, value] : std::vector<std::pair<std::string, int64_t>>{
           {"--tp", -1}, {"--pp", -1}, {"--replicas", -1}, {"--tp", 9}, {"--pp", int64_t{1} << 40},
           {"--replicas", INT64_MAX}, {"--block-tokens", 0}, {"--block-tokens", -1}, {"--batch", 0}}) {
    PlanRequest r = chips(8);
    if (field == "--tp") r.tp = value;
    if (field == "--pp") r.pp = value;
    if (field == "--replicas") r.replicas = value;
    if (field == "--block-tokens") r.block_tokens = value;
    if (field == "--batch") r.batch = value;
    const std::string m = refusal<PlanError>(r);
    EXPECT_NE(m.find(field), std::string::npos) << field << " " << value << ": " << m;
  }
}
