#include <gtest/gtest.h>

#include <string>

#include "runtime/mpi.hpp"

namespace lpurt::runtime {
namespace {

TEST(MpiCheck, PassesSuccessAndThrowsMpiErrorNamingTheCallTheRankAndTheReason) {
  EXPECT_NO_THROW(LPURT_MPI_CHECK(MPI_SUCCESS));
  try {
    mpi_check(MPI_ERR_COUNT, "MPI_Send(nullptr, -1, MPI_BYTE, 0, 0, comm)");
    ADD_FAILURE() << "mpi_check did not throw";
  } catch (const MpiError& e) {
    EXPECT_EQ(e.code(), ExitCode::mpi);
    // Without MPI_Init this process is rank 0 and MPI cannot describe the code (the MPI job test sees
    // "MPI_ERR_COUNT: invalid count argument"); the call is named without its arguments.
    EXPECT_EQ(std::string(e.what()), "MPI_Send failed on rank 0: MPI error code " + std::to_string(MPI_ERR_COUNT));
  }
}

TEST(Requests, GrowsWithNullRequestsAndNeedsNoMpiWhenNothingIsPending) {
  Requests requests;
  requests.reserve_at_least(3);
  requests.reserve_at_least(2);
  ASSERT_EQ(requests.size(), 3u);
  for (std::size_t i = 0; i < requests.size(); ++i) EXPECT_EQ(requests[i], MPI_REQUEST_NULL);
}

}  // namespace
}  // namespace lpurt::runtime
