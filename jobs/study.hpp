#pragma once
/// \file
/// A scaling study: what to run (model, system, run parameters), what to sweep, and where results go.
/// It comes from a TOML job file or from `lpurt sweep` flags, and expands into points; a point is one
/// full `lpurt run`. A point is identified by its key, the canonical JSON of everything that determines
/// its result, so a rerun recognises finished points whatever order the job lists them in.

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "chip/hardware.hpp"
#include "io/record.hpp"
#include "partition/plan.hpp"

namespace lpurt::jobs {

/// The parameters of one run that are not hardware: the sweepable names of Study::run.
const std::vector<std::string>& run_parameter_names();

/// One swept parameter with its values in order (a run parameter or any hardware parameter).
struct Axis {
  std::string name;
  std::vector<io::Record::Value> values;
  std::string origin;  ///< "job.toml:12" or "--sweep", for messages
};

struct Study {
  std::string source = "command line";  ///< the job file, for messages
  std::string name;                     ///< shown in progress, tables and plot titles
  std::string output_dir;               ///< absolute
  bool timing_only = true;
  int64_t ranks = 1;                    ///< MPI ranks per point
  int64_t throttle = 0;                 ///< Slurm: at most this many points at once (0: no limit)
  double step_timeout_s = 60;
  std::string model_file;               ///< absolute; empty: model_preset
  std::string model_preset;             ///< with synthetic weights of `seed`
  uint64_t seed = 1;
  std::string system = "groq-lpu-v1";   ///< preset name or absolute path of a system file
  std::vector<std::pair<std::string, io::Record::Value>> system_set;  ///< overrides, in order
  io::Record run;                       ///< fixed run parameters (chips, tp, ..., tokens)
  std::vector<Axis> axes;               ///< swept parameters: the points are their Cartesian product
  /// A serving study (a [serve] section, or `lpurt sweep --serve`): each point is an `lpurt serve` of these
  /// fixed serving parameters (jobs/serve.hpp), instead of an `lpurt run`.
  bool serving = false;
  io::Record serve;
};

/// One point of a study: its swept values, the resolved run and hardware, and its identity.
struct Point {
  int64_t index = 0;
  std::vector<std::pair<std::string, io::Record::Value>> swept;  ///< [axes] name and value
  partition::PlanRequest request;
  int64_t prompt_len = 0;
  int64_t tokens = 0;
  chip::ChipSpec hardware;
  io::Record serve;   ///< a serving study's parameters: the fixed ones, then the swept ones
  std::string key;    ///< canonical JSON of every input that determines the result
  std::string file;   ///< absolute path of the point's result file (named by a hash of the key)
  std::string label;  ///< "chips=576 link_bytes_per_s=2.8e+10" (the swept values)
};

/// The hardware of `system`: a preset by name, else a system file by path (then named by its path).
/// Throws ConfigError if it is neither, InputError for a malformed file.
chip::ChipSpec load_system(const std::string& system);

/// Reads a job file. Unknown keys, wrong types and impossible values throw ConfigError naming the key
/// and the line. Relative paths are taken from the job file's folder.
Study load_study(const std::string& path);
/// Parses job-file text; `path` names it in messages and anchors relative paths.
Study parse_study(const std::string& text, const std::string& path);

/// Throws ConfigError("<origin> ...") unless `name` is a plain one-line name: no quotes, no path
/// separators, no "..", so that the study's default folder stays inside the folder it is given.
void check_study_name(const std::string& name, const std::string& origin);

/// Checks a study built from flags the way parse_study checks a job file: no parameter swept twice, or
/// both swept and fixed (in run or system_set). Throws ConfigError naming the parameter.
void check_axes(const Study& study);

/// Every point of the study (validated: hardware values in range, run values positive). Throws
/// ConfigError naming the axis and the value that is impossible.
std::vector<Point> expand(const Study& study);

/// The study as a job file that load_study reads back to the same points (absolute paths), written
/// into the output folder so that Slurm steps and later reruns use exactly what ran.
std::string to_toml(const Study& study);

/// Parses "name=v1,v2,..." (a --sweep flag) into an axis.
Axis parse_axis_flag(const std::string& text);
/// Parses a scalar from the command line: an integer, a float, or else a string.
io::Record::Value parse_scalar(const std::string& text);
/// A value as text ("576", "2.8e+10", "chain").
std::string format_value(const io::Record::Value& value);

}  // namespace lpurt::jobs
