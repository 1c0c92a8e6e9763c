#include "jobs/sweep.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <thread>

#include "chip/model_config.hpp"
#include "io/atomic_file.hpp"
#include "io/error.hpp"
#include "io/model_file.hpp"
#include "io/result_file.hpp"
#include "io/serve_output.hpp"
#include "io/table.hpp"
#include "jobs/format.hpp"
#include "jobs/open_model.hpp"
#include "jobs/plots.hpp"
#include "jobs/process.hpp"
#include "jobs/serve.hpp"
#include "runtime/mpi.hpp"
#include "partition/request.hpp"
#include "runtime/run.hpp"
#include "runtime/serve.hpp"

namespace lpurt::jobs {

namespace fs = std::filesystem;

namespace {

std::unique_ptr<io::WeightSource> open_model(const Study& s) {
  if (!s.model_file.empty()) return open_model_file(s.model_file);
  return std::make_unique<io::SyntheticModel>(chip::model_preset(s.model_preset), s.seed, s.model_preset);
}

/// Whether a point's result file exists and was made by this very point (same key).
bool is_done(const Point& p) {
  std::error_code ec;
  if (!fs::exists(p.file, ec)) return false;
  try {
    const io::Record summary = io::read_result_summary(p.file);
    const auto* key = summary.find("point_key");
    return key && std::holds_alternative<std::string>(*key) && std::get<std::string>(*key) == p.key;
  } catch (const Error&) {
    return false;  // unreadable: run again and replace it
  }
}

/// Concurrent sweeps of one study (two `lpurt sweep` processes, Slurm array elements, the rank groups of
/// one sweep) share its points through claim files: points/<hash>.claim holds "host pid" of the sweep
/// running the point. It is created atomically by link(2) of a complete file (O_EXCL semantics, also on
/// NFS), so a claim is never seen half written, and removed once the point's result is in place. A claim
/// of a process that is gone from this host is stale and taken over; a claim of another host is
/// respected (the waiting sweep says which host and pid hold it).
class PointClaim {
 public:
  enum class State { mine, done, busy };

  explicit PointClaim(const Point& p)
      : path_(fs::path(p.file).replace_extension(".claim").string()), owner_(io::this_host() + " " + std::to_string(::getpid())) {}
  PointClaim(const PointClaim&) = delete;
  PointClaim& operator=(const PointClaim&) = delete;
  ~PointClaim() {
    if (held_) ::unlink(path_.c_str());
  }
  const std::string& path() const { return path_; }
  /// "host pid" of the sweep that holds the claim when try_take answered busy.
  const std::string& holder() const { return holder_; }

  /// Takes the claim unless another live sweep holds it; `done` tells whether the point has a result
  /// that counts (checked once the claim is ours: another sweep may have finished it meanwhile).
  State try_take(const std::function<bool()>& done) {
    for (int attempt = 0; attempt < 2; ++attempt) {
      if (link_own_file(path_)) {
        held_ = true;
        if (!done()) return State::mine;
        release();
        return State::done;
      }
      holder_ = read_owner(path_);
      if (!stale(holder_) || !take_over_stale()) break;
    }
    return done() ? State::done : State::busy;
  }
  void release() {
    if (held_) ::unlink(path_.c_str());
    held_ = false;
  }

 private:
  /// Creates `target` holding owner_, atomically: a complete private file linked to the name.
  bool link_own_file(const std::string& target) const {
    const std::string mine = target + ".tmp." + io::this_host() + "." + std::to_string(::getpid());
    {
      std::ofstream out(mine, std::ios::trunc);
      out << owner_ << "\n";
      out.flush();
      if (!out) throw io::FileError(mine + ": cannot write a point claim: " + std::strerror(errno), ExitCode::io);
    }
    const bool linked = ::link(mine.c_str(), target.c_str()) == 0;
    const int error = errno;
    ::unlink(mine.c_str());
    if (!linked && error != EEXIST)
      throw io::FileError(target + ": cannot create the point's claim: " + std::strerror(error), ExitCode::io);
    return linked;
  }

  static std::string read_owner(const std::string& path) {
    std::ifstream in(path);
    std::string owner;
    std::getline(in, owner);
    return owner;
  }

  /// A claim by a process of this host that no longer exists.
  static bool stale(const std::string& owner) {
    const auto space = owner.rfind(' ');
    if (space == std::string::npos || owner.substr(0, space) != io::this_host()) return false;
    const std::string pid = owner.substr(space + 1);
    if (pid.empty() || pid.size() > 9 || pid.find_first_not_of("0123456789") != std::string::npos) return false;
    return !io::process_alive(static_cast<pid_t>(std::stol(pid)));
  }

  /// Removes a stale claim under a guard file, so that of two sweeps finding it stale only one removes
  /// it (the other could otherwise remove the first one's fresh claim). A guard left by a sweep killed in
  /// this short window is stale in turn and removed for the next attempt.
  bool take_over_stale() {
    const std::string guard = path_ + ".takeover";
    if (!link_own_file(guard)) {
      if (stale(read_owner(guard))) ::unlink(guard.c_str());
      return false;
    }
    const bool removed = stale(read_owner(path_)) && ::unlink(path_.c_str()) == 0;
    ::unlink(guard.c_str());
    return removed;
  }

  std::string path_, owner_, holder_;
  bool held_ = false;
};

/// The summary fields every point file starts with.
io::Record point_header(const Study& s, const Point& p, const std::string& status) {
  io::Record r;
  r.set("point", p.index).set("status", status).set("label", p.label).set("study", s.name);
  return r;
}

template <typename T>
T field(const io::Record& r, const char* name) {
  const auto* v = r.find(name);
  return v && std::holds_alternative<T>(*v) ? std::get<T>(*v) : T{};
}

/// Several lines of a program's output as one line of an error message.
std::string one_line(std::string text) {
  std::replace(text.begin(), text.end(), '\n', ' ');
  return text;
}

/// "0-3,7,9-12": Slurm's array index list.
std::string index_ranges(const std::vector<int64_t>& indices) {
  std::string s;
  for (std::size_t i = 0; i < indices.size();) {
    std::size_t j = i;
    while (j + 1 < indices.size() && indices[j + 1] == indices[j] + 1) ++j;
    s += (s.empty() ? "" : ",") + std::to_string(indices[i]) + (j > i ? "-" + std::to_string(indices[j]) : "");
    i = j + 1;
  }
  return s;
}

/// Whether point `p` has a result that counts: with --force, only one written since the sweep started
/// (by a concurrent sweep).
bool counts_as_done(const Point& p, const SweepOptions& options, int64_t started) {
  if (!is_done(p)) return false;
  struct stat st {};
  return !options.force || (::stat(p.file.c_str(), &st) == 0 && st.st_mtime >= started);
}

/// One point of a serving study on the ranks of `comm`: an `lpurt serve` whose result file (written by rank
/// 0) is the point's, its summary led by the point header. A layout that does not fit is an infeasible
/// point; any other failure is the study's. Returns the summary.
io::Record run_serve_point(const Study& s, const Point& p, MPI_Comm comm) {
  const int rank = runtime::comm_rank(comm);
  std::unique_ptr<io::WeightSource> source;
  std::unique_ptr<runtime::ServeSession> session;
  io::Record header = point_header(s, p, "ok");
  header.set("point_key", p.key);
  std::string infeasible;
  const std::string which = "point " + std::to_string(p.index) + " (" + p.label + "): ";
  try {
    // Apart from the session's setup, which is collective: opening the file can fail on one rank alone.
    runtime::agree_on_setup(comm, [&] { source = open_model(s); });
    runtime::agree_on_setup(comm, [&] {
      runtime::ServeConfig config = make_serve_config(p.serve, p.request, p.prompt_len, p.tokens, s.source + ": " + which);
      config.timing_only = s.timing_only;
      config.n_ranks = runtime::comm_size(comm);
      config.faults.step_timeout_s = s.step_timeout_s;
      config.out_path = rank == 0 ? p.file : std::string();
      config.force = true;
      config.summary_header = header;
      // As for a run's point: what the point's own values make impossible is a result of the study.
      try {
        partition::check_request(source->config(), p.hardware, config.request);
        session = std::make_unique<runtime::ServeSession>(*source, p.hardware, config, comm);
      } catch (const partition::PlanError& e) {
        infeasible = e.what();
      } catch (const chip::CapacityError& e) {
        infeasible = e.what();
      }
    });
  } catch (const runtime::AgreedError& e) {
    throw runtime::AgreedError(which + e.what(), e.code(), e.origin_rank());
  }
  if (!infeasible.empty()) {
    io::Record summary = point_header(s, p, "infeasible");
    summary.set("reason", infeasible).set("point_key", p.key);
    if (rank == 0) io::ServeResultWriter(p.file, true, 0, source->config().vocab_size).commit(summary, {}, {}, {}, {});
    return summary;
  }
  try {
    return session->run();
  } catch (const runtime::AgreedError& e) {
    throw runtime::AgreedError(which + e.what(), e.code(), e.origin_rank());
  } catch (const Error& e) {
    throw Error(which + e.what(), e.code());
  }
}

/// Runs the points of `pending` that no other sweep runs, on the ranks of `comm`, one after another; rank
/// 0 of comm claims them, writes the files and prints. Points claimed by other sweeps are retried until
/// they are done (or their claim goes stale), so that every point has a result when this returns.
int64_t run_group_points(const Study& s, std::size_t n_points, std::vector<const Point*> pending,
                         const SweepOptions& options, int64_t started, MPI_Comm comm) {
  const int rank = runtime::comm_rank(comm), n_ranks = runtime::comm_size(comm);
  const bool talk = rank == 0 && !options.quiet;
  const int width = static_cast<int>(std::to_string(n_points).size());
  int64_t n_run = 0;
  std::map<int64_t, std::string> holders;  // rank 0: point -> the claim that keeps it from us
  std::set<int64_t> reported;               // points whose holder was named
  while (!pending.empty()) {
    std::vector<const Point*> waiting;
    for (const Point* point : pending) {
      const Point& p = *point;
      std::unique_ptr<PointClaim> claim;  // rank 0, held while the point runs
      auto state = PointClaim::State::mine;
      runtime::agree_on_setup(comm, [&] {
        if (rank != 0) return;
        claim = std::make_unique<PointClaim>(p);
        state = claim->try_take([&] { return counts_as_done(p, options, started); });
      });
      LPURT_MPI_CHECK(MPI_Bcast(&state, sizeof state, MPI_BYTE, 0, comm));
      if (state == PointClaim::State::done) continue;
      if (state == PointClaim::State::busy) {
        waiting.push_back(point);
        if (rank == 0) holders[p.index] = claim->holder() + " (" + claim->path() + ")";
        continue;
      }
      const auto t0 = std::chrono::steady_clock::now();
      if (s.serving) {
        const io::Record summary = run_serve_point(s, p, comm);
        if (claim) claim->release();
        ++n_run;
        if (!talk) continue;
        const double wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (field<std::string>(summary, "status") == "ok")
          std::printf("[%*lld/%zu] %s: ttft p50 %s p99 %s, tpot p50 %s p99 %s, %.1f tokens/s, goodput %.2f requests/s (%s)\n",
                      width, static_cast<long long>(p.index + 1), n_points, p.label.c_str(),
                      format_seconds(field<double>(summary, "ttft_p50_s")).c_str(),
                      format_seconds(field<double>(summary, "ttft_p99_s")).c_str(),
                      format_seconds(field<double>(summary, "tpot_p50_s")).c_str(),
                      format_seconds(field<double>(summary, "tpot_p99_s")).c_str(), field<double>(summary, "output_tokens_per_s"),
                      field<double>(summary, "goodput_requests_per_s"), format_seconds(wall_s).c_str());
        else
          std::printf("[%*lld/%zu] %s: infeasible: %s\n", width, static_cast<long long>(p.index + 1), n_points,
                      p.label.c_str(), field<std::string>(summary, "reason").c_str());
        std::fflush(stdout);
        continue;
      }
      std::unique_ptr<io::WeightSource> source;
      std::unique_ptr<runtime::RunSession> session;
      std::unique_ptr<io::ResultWriter> point_file;  // rank 0
      io::RunResult result;
      std::string status = "ok", infeasible;
      try {
        // Apart from the session's setup, which is collective: opening the file can fail on one rank alone.
        runtime::agree_on_setup(comm, [&] { source = open_model(s); });
        runtime::agree_on_setup(comm, [&] {
          runtime::RunConfig config;
          config.request = p.request;
          config.request.prompt_tokens = p.prompt_len;
          config.request.output_tokens = p.tokens;
          config.n_tokens = p.tokens;
          config.n_ranks = n_ranks;
          config.timing_only = s.timing_only;
          config.faults.step_timeout_s = s.step_timeout_s;
          // What the point's own values make impossible is a result of the study, the same on every rank
          // (planning is deterministic): a layout that does not fit or cannot exist, a context too short.
          try {
            config.plan = std::make_shared<const partition::Plan>(
                partition::make_plan(source->config(), p.hardware, config.request));
          } catch (const partition::PlanError& e) {
            infeasible = e.what();
          } catch (const chip::CapacityError& e) {
            infeasible = e.what();
          }
          if (infeasible.empty() && p.prompt_len + p.tokens - 1 > config.plan->shape.context)
            infeasible = "prompt_len (" + std::to_string(p.prompt_len) + ") + tokens (" + std::to_string(p.tokens) +
                         ") - 1 exceeds the context of " + std::to_string(config.plan->shape.context) + " positions";
          if (infeasible.empty() && n_ranks > config.plan->n_chips())
            infeasible = std::to_string(n_ranks) + " ranks for " + std::to_string(config.plan->n_chips()) +
                         " chips in use: every rank must host at least one chip";
          if (infeasible.empty()) {
            // After the plan, which bounds the batch and the prompt (one prompt per sequence).
            for (int64_t b = 0; b < p.request.batch; ++b)
              config.prompts.push_back(runtime::synthetic_prompt(p.prompt_len, source->config().vocab_size, b));
            session = std::make_unique<runtime::RunSession>(*source, p.hardware, config, comm);
          }
          if (rank == 0)
            point_file = std::make_unique<io::ResultWriter>(p.file, true, session ? p.request.batch : 1,
                                                            session && !s.timing_only ? p.tokens : 0,
                                                            source->config().vocab_size);
        });
      } catch (const runtime::AgreedError& e) {
        throw runtime::AgreedError("point " + std::to_string(p.index) + " (" + p.label + "): " + e.what(), e.code(),
                                   e.origin_rank());
      }
      if (!infeasible.empty()) {
        status = "infeasible";
        result.summary = point_header(s, p, status);
        result.summary.set("reason", infeasible);
      }
      if (session) {
        const std::string which = "point " + std::to_string(p.index) + " (" + p.label + "): ";
        try {
          runtime::LogitsSink logits;
          if (point_file)
            logits = [&](int64_t sequence, int64_t token, const float* row) { point_file->write_logits(sequence, token, row); };
          result = session->run({}, logits);
        } catch (const runtime::AgreedError& e) {
          throw runtime::AgreedError(which + e.what(), e.code(), e.origin_rank());
        } catch (const Error& e) {
          throw Error(which + e.what(), e.code());
        }
        io::Record summary = point_header(s, p, status);
        for (const auto& [key, value] : result.summary.fields()) summary.set(key, value);
        result.summary = std::move(summary);
        session.reset();
      }
      result.summary.set("point_key", p.key);
      if (point_file) point_file->commit(result);
      if (claim) claim->release();
      ++n_run;
      if (!talk) continue;
      const double wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (status == "ok")
        std::printf("[%*lld/%zu] %s: ttft %s, tpot %s, %.1f tokens/s per user, %.1f per system (%s)\n", width,
                    static_cast<long long>(p.index + 1), n_points, p.label.c_str(),
                    format_seconds(field<double>(result.summary, "ttft_s")).c_str(),
                    format_seconds(field<double>(result.summary, "tpot_s")).c_str(),
                    field<double>(result.summary, "tokens_per_s_user"), field<double>(result.summary, "tokens_per_s_system"),
                    format_seconds(wall_s).c_str());
      else
        std::printf("[%*lld/%zu] %s: infeasible: %s\n", width, static_cast<long long>(p.index + 1), n_points,
                    p.label.c_str(), field<std::string>(result.summary, "reason").c_str());
      std::fflush(stdout);
    }
    // Every point left is another sweep's: name them once, and give it time to finish them.
    if (waiting.size() == pending.size()) {
      for (const Point* point : waiting)
        if (talk && reported.insert(point->index).second)
          std::printf("waiting for point %lld (%s), claimed by %s\n", static_cast<long long>(point->index + 1),
                      point->label.c_str(), holders[point->index].c_str());
      std::fflush(stdout);
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
    pending = std::move(waiting);
  }
  return n_run;
}

/// The cluster's MaxArraySize (array indices go up to it minus 1), from `scontrol show config`; Slurm's
/// default, 1001, when that cannot be read.
int64_t max_array_size() {
  const ProgramResult r = run_program({"scontrol", "show", "config"});
  constexpr int64_t slurm_default = 1001;
  if (r.exit_code != 0) return slurm_default;
  const auto at = r.output.find("MaxArraySize");
  if (at == std::string::npos) return slurm_default;
  const auto equals = r.output.find('=', at);
  if (equals == std::string::npos) return slurm_default;
  const int64_t value = std::strtoll(r.output.c_str() + equals + 1, nullptr, 10);
  return value > 0 ? value : slurm_default;
}

/// Points whose modelled figures are all equal measure the same thing: the swept values make no
/// difference there (more chips at batch 1 only add idle replicas). Says so, so that a flat curve is
/// not read as a property of the hardware.
void warn_identical_rows(const std::vector<io::Record>& rows) {
  std::map<std::vector<double>, std::vector<const io::Record*>> by_figures;
  for (const auto& r : rows)
    if (field<std::string>(r, "status") == "ok" && r.find("tpot_s"))
      by_figures[{field<double>(r, "ttft_s"), field<double>(r, "tpot_s"), field<double>(r, "tokens_per_s_system")}]
          .push_back(&r);
  for (const auto& [figures, same] : by_figures) {
    if (same.size() < 2) continue;
    std::vector<int64_t> indices;
    bool idle = false;
    for (const io::Record* r : same) {
      indices.push_back(field<int64_t>(*r, "point"));
      idle = idle || field<int64_t>(*r, "chips_idle") > 0;
    }
    std::printf("warning table points %s give identical modelled rows (ttft, tpot, tokens/s): the swept values make no "
                "difference there%s\n",
                index_ranges(indices).c_str(),
                idle ? " (some leave chips idle: the extra chips are idle; sweep batch too)" : "");
  }
}

}  // namespace

int64_t run_points(const Study& s, const std::vector<Point>& points, const SweepOptions& options, MPI_Comm comm) {
  const int world_rank = runtime::comm_rank(comm), world_size = runtime::comm_size(comm);
  const auto per_point = static_cast<int>(s.ranks);
  const bool one_point = options.only_point >= 0;
  if (world_size % per_point != 0 || (one_point && world_size != per_point))
    throw chip::ConfigError(s.source + ": the study runs each point on " + std::to_string(s.ranks) +
                            " rank(s) (study.ranks) but lpurt sweep has " + std::to_string(world_size) +
                            "; launch it as `mpirun -np " + std::to_string(s.ranks) + " lpurt sweep ...`" +
                            (one_point ? std::string() : " (or on a multiple of " + std::to_string(s.ranks) +
                                                             " ranks, to run that many points at once)"));
  if (options.only_point >= static_cast<int64_t>(points.size()))
    throw chip::ConfigError(s.source + ": --point " + std::to_string(options.only_point) + " is out of range (the study has " +
                            std::to_string(points.size()) + " points: 0.." + std::to_string(points.size() - 1) + ")");

  // World rank 0 decides what is done (one file system view) and every rank follows.
  std::vector<int> todo(points.size(), 0);
  if (world_rank == 0) {
    io::create_folder((fs::path(s.output_dir) / "points").string());
    io::remove_stale_temporaries((fs::path(s.output_dir) / "points").string());  // of killed earlier runs
    for (const auto& p : points)
      todo[static_cast<std::size_t>(p.index)] =
          (options.only_point < 0 || options.only_point == p.index) && (options.force || !is_done(p));
  }
  LPURT_MPI_CHECK(MPI_Bcast(todo.data(), static_cast<int>(todo.size()), MPI_INT, 0, comm));
  int64_t started = std::time(nullptr);  // with --force, a result written since counts (a concurrent sweep's)
  LPURT_MPI_CHECK(MPI_Bcast(&started, 1, MPI_INT64_T, 0, comm));
  int64_t n_todo = 0;
  for (const int t : todo) n_todo += t;
  // Groups of study.ranks consecutive ranks (one host, with the usual mapping) run points side by side:
  // the k-th point to run goes to group k mod groups. A group that is through with its share goes on with
  // the other groups' points that nobody has claimed yet (see PointClaim).
  const int n_groups = world_size / per_point, my_group = world_rank / per_point;
  if (world_rank == 0 && !options.quiet && !one_point)
    std::printf("lpurt sweep %s: %zu points, %lld done, %lld to run on %d rank(s)%s -> %s\n", s.name.c_str(),
                points.size(), static_cast<long long>(static_cast<int64_t>(points.size()) - n_todo),
                static_cast<long long>(n_todo), world_size,
                n_groups > 1 ? (", " + std::to_string(n_groups) + " points at a time").c_str() : "", s.output_dir.c_str());
  std::fflush(stdout);
  std::vector<const Point*> mine, others;  // [points of this group, in order], then the rest
  int64_t k = 0;
  for (const auto& p : points)
    if (todo[static_cast<std::size_t>(p.index)]) (k++ % n_groups == my_group ? mine : others).push_back(&p);
  mine.insert(mine.end(), others.begin(), others.end());
  if (n_groups == 1) return run_group_points(s, points.size(), mine, options, started, comm);
  int64_t n_run = 0;
  std::string failure;
  auto code = ExitCode::success;
  {
    const runtime::Comm group = runtime::Comm::split(comm, my_group, world_rank);
    try {
      n_run = run_group_points(s, points.size(), mine, options, started, group.get());
    } catch (const runtime::AgreedError& e) {
      // The group agreed on it; the other groups finish their points, then every rank raises it.
      failure = e.what(), code = e.code();
    }
  }
  runtime::agree_on_error(comm, failure, code);
  LPURT_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &n_run, 1, MPI_INT64_T, MPI_SUM, comm));
  return n_run / per_point;
}

void collect(const Study& s, const std::vector<Point>& points) {
  std::vector<int64_t> missing;
  std::vector<io::Record> rows;
  for (const auto& p : points) {
    if (!is_done(p)) {
      missing.push_back(p.index);
      continue;
    }
    const io::Record summary = io::read_result_summary(p.file);
    io::Record row;
    row.set("point", p.index).set("status", field<std::string>(summary, "status"));
    for (const auto& [name, value] : p.swept) row.set(name, value);
    for (const auto& [name, value] : summary.fields())
      if (!row.find(name) && name != "point_key" && name != "reason" && name != "study" && name != "format")
        row.set(name, value);
    row.set("reason", field<std::string>(summary, "reason"));
    row.set("point_file", fs::relative(p.file, s.output_dir).string());
    rows.push_back(std::move(row));
  }
  if (!missing.empty())
    throw Error(s.source + ": " + std::to_string(missing.size()) + " of " + std::to_string(points.size()) +
                    " points have no result yet (points " + index_ranges(missing) + "); run `lpurt sweep " + s.source +
                    "` to finish them",
                ExitCode::runtime);
  auto unit = [&](const std::string& name) {
    for (const auto& info : chip::parameter_infos())
      if (info.name == name) return info.unit;
    return io::unit_of_field(name);
  };
  auto columns = io::make_columns(rows, unit);
  // Infeasible points come with fewer fields: keep their reason and the file at the end of every row.
  std::stable_partition(columns.begin(), columns.end(),
                        [](const io::TableColumn& c) { return c.name != "reason" && c.name != "point_file"; });
  io::Record attributes;
  attributes.set("study", s.name).set("job", s.source).set("points", static_cast<int64_t>(points.size()));
  std::string axes;
  for (const auto& a : s.axes) axes += (axes.empty() ? "" : ",") + a.name;
  attributes.set("swept", axes);
  const fs::path out(s.output_dir);
  io::write_table_hdf5((out / "results.h5").string(), columns, attributes);
  io::write_table_csv((out / "results.csv").string(), columns);
  int64_t n_ok = 0;
  for (const auto& r : rows) n_ok += field<std::string>(r, "status") == "ok";
  std::printf("table   %s (and .h5): %zu points, %lld ok, %lld infeasible\n", (out / "results.csv").c_str(),
              rows.size(), static_cast<long long>(n_ok), static_cast<long long>(static_cast<int64_t>(rows.size()) - n_ok));
  warn_identical_rows(rows);
  const PlotSet plots = s.serving ? render_serve_plots(s, rows, (out / "plots").string())
                                  : render_plots(s, rows, (out / "plots").string());
  if (!plots.warning.empty()) std::printf("plots   %s\n", plots.warning.c_str());
  for (const auto& f : plots.files) std::printf("plot    %s\n", f.c_str());
}

std::string write_study_job(const Study& s) {
  const fs::path path = fs::path(s.output_dir) / "job.toml";
  io::create_folder(s.output_dir);
  io::write_text_atomically(path.string(), to_toml(s), true);
  return path.string();
}

std::string submit_to_slurm(const Study& s, const std::vector<Point>& points, const SlurmOptions& options) {
  const std::string job = write_study_job(s);
  const fs::path logs = fs::path(s.output_dir) / "slurm";
  io::create_folder(logs.string());
  std::vector<int64_t> missing;
  for (const auto& p : points)
    if (!is_done(p)) missing.push_back(p.index);
  auto sbatch = [&](std::vector<std::string> args, const std::string& script, int64_t point_offset) {
    std::vector<std::string> argv = {"sbatch", "--parsable",
                                     "--export=ALL,LPURT=" + options.lpurt_binary +
                                         ",LPURT_POINT_OFFSET=" + std::to_string(point_offset)};
    argv.insert(argv.end(), options.sbatch_args.begin(), options.sbatch_args.end());
    argv.insert(argv.end(), args.begin(), args.end());
    argv.push_back((fs::path(options.scripts_dir) / script).string());
    argv.push_back(job);
    const ProgramResult r = run_program(argv, true);
    if (r.exit_code == 127) throw Error("sbatch is not on PATH: --slurm submits from a Slurm login node", ExitCode::runtime);
    if (r.exit_code != 0 || r.output.empty())
      throw Error("sbatch " + script + " failed (exit " + std::to_string(r.exit_code) + ")" +
                      (r.output.empty() ? "" : ": " + one_line(r.output)),
                  ExitCode::runtime);
    return r.output.substr(0, r.output.find(';'));  // --parsable prints "id" or "id;cluster"
  };
  std::vector<std::string> collect_args = {"--job-name=lpurt-collect-" + s.name, "--ntasks=1",
                                           "--output=" + (logs / "%x-%j.out").string()};
  // Array indices must be below the cluster's MaxArraySize: points from k x that size on go in the k-th
  // array, whose element i runs point k x size + i. With a throttle, each array waits for the one before
  // it (afterany), so that the study never runs more than `throttle` points at once.
  const int64_t array_size = max_array_size();
  std::string after_arrays;
  std::string previous;
  for (std::size_t i = 0; i < missing.size();) {
    const int64_t offset = missing[i] / array_size * array_size;
    std::vector<int64_t> indices;
    for (; i < missing.size() && missing[i] < offset + array_size; ++i) indices.push_back(missing[i] - offset);
    std::string array = "--array=" + index_ranges(indices);
    if (s.throttle > 0) array += "%" + std::to_string(s.throttle);
    std::vector<std::string> args = {"--job-name=lpurt-sweep-" + s.name, array, "--ntasks=" + std::to_string(s.ranks),
                                     "--output=" + (logs / "%x-%A_%a.out").string()};
    if (s.throttle > 0 && !previous.empty()) args.push_back("--dependency=afterany:" + previous);
    previous = sbatch(args, "sweep-array.sbatch", offset);
    after_arrays += ":" + previous;
    std::vector<int64_t> point_indices(indices);
    for (auto& p : point_indices) p += offset;
    std::printf("submitted job array %s: %zu of %zu points (%s), %lld rank(s) each%s%s\n", previous.c_str(),
                indices.size(), points.size(), index_ranges(point_indices).c_str(), static_cast<long long>(s.ranks),
                s.throttle > 0 ? (", at most " + std::to_string(s.throttle) + " at once").c_str() : "",
                offset > 0 ? (", array index + " + std::to_string(offset)).c_str() : "");
  }
  if (!after_arrays.empty()) {
    collect_args.push_back("--dependency=afterok" + after_arrays);
    collect_args.push_back("--kill-on-invalid-dep=yes");
  }
  const std::string collect_id = sbatch(collect_args, "collect.sbatch", 0);
  std::printf("submitted collect job %s%s: table and plots in %s\nlogs in %s\n", collect_id.c_str(),
              missing.empty() ? " (every point was done)" : " (runs when the arrays have succeeded)",
              s.output_dir.c_str(), logs.c_str());
  std::fflush(stdout);
  return collect_id;
}

}  // namespace lpurt::jobs
