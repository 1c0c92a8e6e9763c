#pragma once
/// \file
/// The one place lpurt talks to MPI's error machinery. Policy: every communicator returns errors
/// (MPI_ERRORS_RETURN, set on MPI_COMM_WORLD right after MPI_Init and on every communicator lpurt
/// creates), and every MPI call goes through LPURT_MPI_CHECK, which turns a failure into an MpiError
/// naming the call, the rank and MPI's own description. `main` prints it as one line and aborts the job.
/// Owned handles are RAII: a Comm frees its communicator, a Requests set cancels and frees what is still
/// pending when an error unwinds past it.
///
/// Example usage:
/// \code
///   lpurt::runtime::MpiEnvironment mpi(argc, argv);            // MPI_Init + MPI_ERRORS_RETURN
///   lpurt::runtime::Comm node = lpurt::runtime::Comm::split_type_shared(MPI_COMM_WORLD);
///   LPURT_MPI_CHECK(MPI_Barrier(node.get()));                   // throws MpiError on failure
///   mpi.finalize();
/// \endcode

#include <mpi.h>

#include <cstddef>
#include <string>
#include <vector>

#include "chip/error.hpp"

namespace lpurt::runtime {

/// A failed MPI call: "MPI_Send failed on rank 1: MPI_ERR_COUNT: invalid count argument".
class MpiError : public Error {
 public:
  MpiError(const std::string& call, int rank, int status);
};

/// Throws MpiError if `status` is not MPI_SUCCESS. `call` is the call's text; the name before its first
/// '(' names it in the message. The rank is this process's rank in MPI_COMM_WORLD.
void mpi_check(int status, const char* call);

/// Whether MPI_Init has run (unit tests and single-process tools make no MPI call).
bool mpi_initialized();
/// This process's rank in `comm`, and the number of ranks of `comm`.
int comm_rank(MPI_Comm comm);
int comm_size(MPI_Comm comm);

/// Ends the whole job with exit code `code`: MPI_Abort on MPI_COMM_WORLD, called by the first thread to
/// get here only (TBB threads may fail at the same moment); exits directly if MPI_Abort returns.
[[noreturn]] void mpi_abort(int code);

/// MPI_Init with MPI_ERRORS_RETURN on MPI_COMM_WORLD. The destructor finalizes MPI if finalize() did
/// not (an error is unwinding: its result is then ignored, the error being reported already).
class MpiEnvironment {
 public:
  MpiEnvironment(int& argc, char**& argv);
  ~MpiEnvironment();
  MpiEnvironment(const MpiEnvironment&) = delete;
  MpiEnvironment& operator=(const MpiEnvironment&) = delete;
  /// MPI_Finalize, checked.
  void finalize();

 private:
  bool finalized_ = false;
};

/// An owned communicator, with MPI_ERRORS_RETURN set; MPI_Comm_free'd on destruction.
class Comm {
 public:
  Comm() = default;
  ~Comm();
  Comm(Comm&& other) noexcept;
  Comm& operator=(Comm&& other) noexcept;
  Comm(const Comm&) = delete;
  Comm& operator=(const Comm&) = delete;

  /// MPI_Comm_split of `parent` (collective).
  static Comm split(MPI_Comm parent, int color, int key);
  /// The ranks of `parent` that share this one's memory (a host): MPI_Comm_split_type (collective).
  static Comm split_type_shared(MPI_Comm parent);

  MPI_Comm get() const { return comm_; }

 private:
  explicit Comm(MPI_Comm comm);
  void reset() noexcept;
  MPI_Comm comm_ = MPI_COMM_NULL;
};

/// Owned nonblocking requests, indexed like the messages they carry. A request still pending at
/// destruction belongs to an error that is unwinding (a completed run waits for every one): it is
/// cancelled and freed, so that MPI does not write into a buffer after it is released.
class Requests {
 public:
  Requests() = default;
  ~Requests();
  Requests(const Requests&) = delete;
  Requests& operator=(const Requests&) = delete;

  /// Grows to at least n requests; new ones are MPI_REQUEST_NULL.
  void reserve_at_least(std::size_t n);
  std::size_t size() const { return requests_.size(); }
  MPI_Request& operator[](std::size_t i) { return requests_[i]; }

 private:
  std::vector<MPI_Request> requests_;
};

}  // namespace lpurt::runtime

/// Checks an MPI call: LPURT_MPI_CHECK(MPI_Isend(...)) throws runtime::MpiError naming MPI_Isend.
#define LPURT_MPI_CHECK(call) ::lpurt::runtime::mpi_check((call), #call)
