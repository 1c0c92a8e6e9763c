#include "runtime/mpi.hpp"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <utility>

namespace lpurt::runtime {

namespace {

bool mpi_finalized() {
  int finalized = 0;
  MPI_Finalized(&finalized);  // callable at any time, never fails
  return finalized != 0;
}

/// Whether MPI calls are allowed now: between MPI_Init and MPI_Finalize.
bool mpi_active() { return mpi_initialized() && !mpi_finalized(); }

std::string error_text(int status) {
  // Open MPI refuses MPI_Error_string outside MPI_Init..MPI_Finalize (a failed MPI_Init, for one).
  const std::string code = "MPI error code " + std::to_string(status);
  if (!mpi_active()) return code;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(status, text, &length) != MPI_SUCCESS) return code;
  return std::string(text, static_cast<std::size_t>(length));
}

}  // namespace

MpiError::MpiError(const std::string& call, int rank, int status)
    : Error(call + " failed on rank " + std::to_string(rank) + ": " + error_text(status), ExitCode::mpi) {}

void mpi_check(int status, const char* call) {
  if (status == MPI_SUCCESS) return;
  const char* paren = std::strchr(call, '(');
  const std::string name = paren ? std::string(call, static_cast<std::size_t>(paren - call)) : std::string(call);
  int rank = 0;
  // The failing call's own communicator may be broken; MPI_COMM_WORLD names the process for the job.
  if (mpi_active() && MPI_Comm_rank(MPI_COMM_WORLD, &rank) != MPI_SUCCESS) rank = -1;
  throw MpiError(name, rank, status);
}

bool mpi_initialized() {
  int initialized = 0;
  MPI_Initialized(&initialized);  // callable at any time, never fails
  return initialized != 0;
}

int comm_rank(MPI_Comm comm) {
  int rank = 0;
  LPURT_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  return rank;
}

int comm_size(MPI_Comm comm) {
  int size = 0;
  LPURT_MPI_CHECK(MPI_Comm_size(comm, &size));
  return size;
}

void mpi_abort(int code) {
  static std::atomic<bool> aborting{false};
  if (!aborting.exchange(true)) MPI_Abort(MPI_COMM_WORLD, code);
  // MPI_Abort returned (it failed) or another thread is aborting: end this process with the code anyway.
  std::_Exit(code);
}

MpiEnvironment::MpiEnvironment(int& argc, char**& argv) {
  LPURT_MPI_CHECK(MPI_Init(&argc, &argv));
  LPURT_MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
}

MpiEnvironment::~MpiEnvironment() {
  if (!finalized_ && mpi_active()) MPI_Finalize();
}

void MpiEnvironment::finalize() {
  finalized_ = true;
  LPURT_MPI_CHECK(MPI_Finalize());
}

Comm::Comm(MPI_Comm comm) : comm_(comm) {
  // Derived communicators inherit the parent's handler; set it anyway, so no communicator lpurt uses can
  // be the one that aborts instead of returning.
  LPURT_MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
}

Comm::~Comm() { reset(); }

Comm::Comm(Comm&& other) noexcept : comm_(std::exchange(other.comm_, MPI_COMM_NULL)) {}

Comm& Comm::operator=(Comm&& other) noexcept {
  if (this != &other) {
    reset();
    comm_ = std::exchange(other.comm_, MPI_COMM_NULL);
  }
  return *this;
}

void Comm::reset() noexcept {
  // A destructor cannot report a failed free; the communicator is gone either way.
  if (comm_ != MPI_COMM_NULL && mpi_active()) MPI_Comm_free(&comm_);
  comm_ = MPI_COMM_NULL;
}

Comm Comm::split(MPI_Comm parent, int color, int key) {
  MPI_Comm comm = MPI_COMM_NULL;
  LPURT_MPI_CHECK(MPI_Comm_split(parent, color, key, &comm));
  return Comm(comm);
}

Comm Comm::split_type_shared(MPI_Comm parent) {
  MPI_Comm comm = MPI_COMM_NULL;
  LPURT_MPI_CHECK(MPI_Comm_split_type(parent, MPI_COMM_TYPE_SHARED, comm_rank(parent), MPI_INFO_NULL, &comm));
  return Comm(comm);
}

Requests::~Requests() {
  if (!mpi_active()) return;
  for (MPI_Request& r : requests_) {
    if (r == MPI_REQUEST_NULL) continue;
    // A cancelled receive completes at once and never writes into its buffer; a request that does not
    // complete now (a send Open MPI cannot cancel) is freed, and MPI finishes or drops it on its own.
    int done = 0;
    if (MPI_Cancel(&r) == MPI_SUCCESS && MPI_Test(&r, &done, MPI_STATUS_IGNORE) == MPI_SUCCESS && done) continue;
    if (r != MPI_REQUEST_NULL) MPI_Request_free(&r);
  }
}

void Requests::reserve_at_least(std::size_t n) {
  if (requests_.size() < n) requests_.resize(n, MPI_REQUEST_NULL);
}

}  // namespace lpurt::runtime
