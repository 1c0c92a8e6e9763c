#pragma once
/// \file
/// `lpurt sweep`: runs a study's points on the ranks of a communicator, resumably (a point whose result
/// file exists is done; each result is written atomically), then collects the table and the plots; or
/// writes and submits the study as a Slurm job array and a collect job that depends on it.

#include <mpi.h>

#include <cstdint>
#include <string>
#include <vector>

#include "jobs/study.hpp"

namespace lpurt::jobs {

struct SweepOptions {
  bool force = false;         ///< rerun points that already have a result
  int64_t only_point = -1;    ///< run this point only and do not collect (a Slurm array element)
  bool quiet = false;         ///< no per-point progress lines
};

/// Runs every point that has no result yet (or `only_point`), on the ranks of `comm`: each point on
/// study.ranks of them; with k times as many, k groups of consecutive ranks run points side by side (the
/// i-th point to run on group i mod k, then whatever no group has claimed). Each point is claimed in the
/// points folder before it runs (points/<hash>.claim, "host pid"), so that sweeps of one study running at
/// once (processes, Slurm array elements, rank groups) share the points and run each exactly once; a
/// claim of a process gone from this host is stale and taken over; points claimed by others are waited
/// for, so that every point has a result on return. Infeasible points (does not fit, impossible layout) are recorded
/// as such and the study goes on; any other failure ends the study with an error naming the point,
/// keeping every finished point (an error its group agreed on, such as a bad model file, waits for the
/// other groups to finish their points; a rank that fails alone aborts the job). Returns the number of
/// points run.
int64_t run_points(const Study& study, const std::vector<Point>& points, const SweepOptions& options, MPI_Comm comm);

/// Reads every point's result into results.h5 and results.csv in the output folder and renders the plots
/// (gnuplot). Throws naming the points that have no result yet.
void collect(const Study& study, const std::vector<Point>& points);

/// Writes the study's job.toml into its output folder (the file every Slurm step reads).
std::string write_study_job(const Study& study);

struct SlurmOptions {
  std::string lpurt_binary;               ///< absolute path of the lpurt executable the jobs run
  std::string scripts_dir;                ///< folder of sweep-array.sbatch and collect.sbatch
  std::vector<std::string> sbatch_args;   ///< extra options for every sbatch (e.g. --partition=x)
};
/// Submits the points without a result as one job array (one point per element, `%throttle`) and a
/// collect job with --dependency=afterok on it. Prints the job ids; returns the collect job's id.
std::string submit_to_slurm(const Study& study, const std::vector<Point>& points, const SlurmOptions& options);

}  // namespace lpurt::jobs
