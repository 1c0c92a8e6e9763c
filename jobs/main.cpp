// lpurt: parse the command line, run one subcommand, and turn every failure into one line on stderr
// ("[rank r/N] error: ...") and a non-zero exit that ends the whole MPI job.
#include <mpi.h>

#include <malloc.h>
#include <tbb/global_control.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <thread>

#include "chip/error.hpp"
#include "jobs/cli.hpp"
#include "runtime/engine.hpp"
#include "runtime/mpi.hpp"

namespace {

/// Whether a launcher started this process as a rank of a job: mpirun (Open MPI), srun with PMIx or PMI2,
/// MPICH's Hydra.
bool launched_as_rank() {
  for (const char* variable : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"})
    if (std::getenv(variable) != nullptr) return true;
  return false;
}

/// Subcommands that host chips on MPI ranks; the others never touch MPI (no launcher needed). A sweep
/// that only collects results or submits to Slurm runs no point. A `run` or `serve` started without a
/// launcher is one rank and needs no MPI: as a singleton, MPI_Init would start a helper daemon (0.4 s and
/// 10 MB of memory here) for nothing.
bool needs_mpi(int argc, char** argv) {
  if (argc < 2) return false;
  if (std::strcmp(argv[1], "run") == 0 || std::strcmp(argv[1], "serve") == 0) return launched_as_rank();
  if (std::strcmp(argv[1], "sweep") != 0) return false;
  for (int i = 2; i < argc; ++i)
    for (const char* no_points : {"--collect", "--slurm", "--help", "-h"})
      if (std::strcmp(argv[i], no_points) == 0) return false;
  return true;
}

int fail(int rank, int n_ranks, bool mpi, const char* message, int code) {
  std::fprintf(stderr, "[rank %d/%d] error: %s\n", rank, n_ranks, message);
  std::fflush(stderr);
  // One failing rank must not leave the others waiting: abort the job with the error's code. A single
  // rank just exits; MpiEnvironment's destructor finalizes MPI.
  if (mpi && n_ranks > 1) lpurt::runtime::mpi_abort(code);
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  // The planner builds, solves and drops a static program per candidate layout (tens of MB each at
  // scale). By default glibc hands freed blocks above its (adaptive) mmap and trim thresholds back to the
  // kernel, so every candidate page-faults and zeroes its memory afresh: that was over half of a batch-8
  // search of llama2-70b on 576 chips (measured in bench/simulator.sh). Blocks up to 32 MiB (glibc's
  // largest mmap threshold) now come from the heap, and freed heap memory stays for the next candidate.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  const bool mpi = needs_mpi(argc, argv);
  int rank = 0, n_ranks = 1;
  std::unique_ptr<lpurt::runtime::MpiEnvironment> environment;
  std::unique_ptr<tbb::global_control> threads;
  try {
    if (mpi) {
      environment = std::make_unique<lpurt::runtime::MpiEnvironment>(argc, argv);
      rank = lpurt::runtime::comm_rank(MPI_COMM_WORLD);
      n_ranks = lpurt::runtime::comm_size(MPI_COMM_WORLD);
    }
    // Ranks sharing a host share its cores. In a run or a serve, the one Engine sizes each compute op's
    // threads to the host's ranks working at that moment (runtime/engine.hpp). The point groups of a sweep
    // have one Engine each, which do not know of each other: each rank's TBB threads get an equal part of
    // the cores, so that R ranks never run R x cores threads.
    if (mpi && n_ranks > 1 && std::strcmp(argv[1], "run") != 0 && std::strcmp(argv[1], "serve") != 0) {
      const int local_ranks = lpurt::runtime::comm_size(lpurt::runtime::Comm::split_type_shared(MPI_COMM_WORLD).get());
      const auto cores = static_cast<int>(std::thread::hardware_concurrency());
      threads = std::make_unique<tbb::global_control>(tbb::global_control::max_allowed_parallelism,
                                                      static_cast<std::size_t>(std::max(1, cores / local_ranks)));
    }
    int code = 0;
    try {
      code = lpurt::jobs::run_command_line(argc, argv, rank, n_ranks);
    } catch (const lpurt::runtime::AgreedError& e) {
      // Every rank holds the same error: rank 0 prints it once, naming the rank it came from, and all exit.
      if (rank == 0) std::fprintf(stderr, "[rank %d/%d] error: %s\n", e.origin_rank(), n_ranks, e.what());
      code = static_cast<int>(e.code());
    }
    if (environment) environment->finalize();
    return code;
  } catch (const lpurt::Error& e) {
    return fail(rank, n_ranks, mpi, e.what(), static_cast<int>(e.code()));
  } catch (const std::bad_alloc&) {
    return fail(rank, n_ranks, mpi, "out of host memory", static_cast<int>(lpurt::ExitCode::runtime));
  } catch (const std::exception& e) {
    return fail(rank, n_ranks, mpi, e.what(), static_cast<int>(lpurt::ExitCode::internal));
  }
}
