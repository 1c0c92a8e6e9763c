#include "jobs/serve.hpp"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>

#include "chip/error.hpp"
#include "io/text_file.hpp"
#include "jobs/format.hpp"
#include "jobs/open_model.hpp"
#include "jobs/study.hpp"
#include "partition/request.hpp"
#include "partition/workload.hpp"
#include "runtime/run.hpp"
#include "runtime/serve.hpp"

namespace lpurt::jobs {

namespace {

/// The largest workload file read (a trace with prompts of 10,000 requests of 2,048 tokens is ~120 MB).
constexpr int64_t max_workload_bytes = int64_t{1} << 30;

void check_count(const CLI::Option* option, int64_t value, const char* left_out = nullptr) {
  if (option->count() == 0 || value >= 1) return;
  throw Error(option->get_name() + " must be at least 1 (got " + std::to_string(value) + ")" +
                  (left_out ? std::string("; leave it out for ") + left_out : std::string()),
              ExitCode::usage);
}

/// A service-level objective in milliseconds: a positive, finite number.
double slo_seconds(const CLI::Option* option, double ms) {
  if (option->count() == 0) return 0;
  if (!(ms > 0 && ms <= 1e9))
    throw Error(option->get_name() + " must be above 0 ms (got " + format_number(ms) + ")", ExitCode::usage);
  return ms * 1e-3;
}

/// How a generated workload was made, in the summary.
void describe_workload(const partition::WorkloadSpec& spec, io::Record& r) {
  r.set("workload", std::string("generated"))
      .set("rate_per_s", spec.rate_per_s)
      .set("arrivals", std::string(partition::arrivals_name(spec.arrivals)))
      .set("arrivals_cv", spec.cv)
      .set("prompt_len", partition::describe(spec.prompt))
      .set("output_len", partition::describe(spec.output))
      .set("seed", static_cast<int64_t>(std::min<uint64_t>(spec.seed, INT64_MAX)));
}

template <typename T>
T field(const io::Record& r, const char* name) {
  const auto* v = r.find(name);
  return v && std::holds_alternative<T>(*v) ? std::get<T>(*v) : T{};
}

}  // namespace

const std::vector<std::string>& serve_parameter_names() {
  static const std::vector<std::string> names = {
      "workload", "rate",   "requests", "arrivals",       "cv",          "prompt_len_dist", "tokens_dist", "seed",
      "policy",   "router", "slots",    "kv_page_tokens", "kv_pages",    "slo_ttft_ms",     "slo_tpot_ms"};
  return names;
}

ServeValueKind serve_parameter_kind(const std::string& name) {
  if (name == "workload" || name == "arrivals" || name == "prompt_len_dist" || name == "tokens_dist" ||
      name == "policy" || name == "router")
    return ServeValueKind::text;
  if (name == "requests" || name == "seed" || name == "slots" || name == "kv_page_tokens" || name == "kv_pages")
    return ServeValueKind::integer;
  return ServeValueKind::number;
}

bool is_serve_parameter(const std::string& name) {
  const auto& names = serve_parameter_names();
  return std::find(names.begin(), names.end(), name) != names.end();
}

namespace {

/// The value of `name` in `params` as a number (integers too), or `fallback`.
double number_of(const io::Record& params, const std::string& name, double fallback) {
  const auto* v = params.find(name);
  if (!v) return fallback;
  if (const auto* i = std::get_if<int64_t>(v)) return static_cast<double>(*i);
  if (const auto* d = std::get_if<double>(v)) return *d;
  return fallback;
}

std::string text_of(const io::Record& params, const std::string& name, const std::string& fallback) {
  const auto* v = params.find(name);
  return v && std::holds_alternative<std::string>(*v) ? std::get<std::string>(*v) : fallback;
}

}  // namespace

void check_serve_parameters(const io::Record& params, const std::string& origin) {
  for (const auto& [name, value] : params.fields()) {
    const std::string where = origin + ": " + name;
    if (!is_serve_parameter(name)) throw chip::ConfigError(where + " is not a serving parameter");
    const ServeValueKind kind = serve_parameter_kind(name);
    if ((kind == ServeValueKind::text) != std::holds_alternative<std::string>(value) ||
        (kind == ServeValueKind::integer && !std::holds_alternative<int64_t>(value)))
      throw chip::ConfigError(where + " must be " +
                              (kind == ServeValueKind::text      ? "a string"
                               : kind == ServeValueKind::integer ? "an integer"
                                                                 : "a number") +
                              ", got " + format_value(value));
  }
  try {
    partition::parse_policy(text_of(params, "policy", "decode-priority"));
    partition::parse_router(text_of(params, "router", "round-robin"));
    partition::parse_arrivals(text_of(params, "arrivals", "poisson"));
    if (params.find("prompt_len_dist"))
      partition::parse_length_dist(text_of(params, "prompt_len_dist", ""), "prompt_len_dist");
    if (params.find("tokens_dist")) partition::parse_length_dist(text_of(params, "tokens_dist", ""), "tokens_dist");
  } catch (const partition::WorkloadError& e) {
    throw chip::ConfigError(origin + ": " + e.what());
  }
  const bool trace = params.find("workload") != nullptr;
  for (const char* generated : {"rate", "requests", "arrivals", "cv", "prompt_len_dist", "tokens_dist", "seed"})
    if (trace && params.find(generated))
      throw chip::ConfigError(origin + ": " + generated +
                              " describes a generated workload, but workload names a trace");
  if (!trace && (!params.find("rate") || !params.find("requests")))
    throw chip::ConfigError(origin + ": a serving study needs workload = \"trace.csv\", or rate and requests");
  auto at_least = [&](const char* name, double min, bool strictly) {
    const double x = number_of(params, name, min + 1);
    if (!(strictly ? x > min : x >= min) || !std::isfinite(x))
      throw chip::ConfigError(origin + ": " + name + " must be " + (strictly ? "above " : "at least ") +
                              format_number(min) + ", got " + format_number(x));
  };
  at_least("rate", 0, true);
  at_least("requests", 1, false);
  at_least("slots", 1, false);
  at_least("kv_page_tokens", 1, false);
  at_least("kv_pages", 1, false);
  at_least("slo_ttft_ms", 0, true);
  at_least("slo_tpot_ms", 0, true);
  at_least("seed", 0, false);
  if (params.find("cv") && text_of(params, "arrivals", "poisson") != "gamma")
    throw chip::ConfigError(origin + ": cv applies to arrivals = \"gamma\"");
}

runtime::ServeConfig make_serve_config(const io::Record& params, const partition::PlanRequest& request,
                                       int64_t prompt_len, int64_t tokens, const std::string& origin) {
  check_serve_parameters(params, origin);
  runtime::ServeConfig config;
  config.request = request;
  config.slots = static_cast<int64_t>(number_of(params, "slots", 0));
  config.options.policy = partition::parse_policy(text_of(params, "policy", "decode-priority"));
  config.options.router = partition::parse_router(text_of(params, "router", "round-robin"));
  config.options.kv_page_tokens = static_cast<int64_t>(number_of(params, "kv_page_tokens", 256));
  config.kv_pages = static_cast<int64_t>(number_of(params, "kv_pages", 0));
  config.slo.ttft_s = number_of(params, "slo_ttft_ms", 0) * 1e-3;
  config.slo.tpot_s = number_of(params, "slo_tpot_ms", 0) * 1e-3;
  if (params.find("workload")) {
    const std::string path = text_of(params, "workload", "");
    config.requests = partition::parse_workload_csv(io::read_text_file(path, "workload", max_workload_bytes), path);
    config.workload.set("workload", path);
    return config;
  }
  partition::WorkloadSpec spec;
  spec.rate_per_s = number_of(params, "rate", 1);
  spec.n_requests = static_cast<int64_t>(number_of(params, "requests", 1));
  spec.arrivals = partition::parse_arrivals(text_of(params, "arrivals", "poisson"));
  spec.cv = number_of(params, "cv", 1);
  spec.prompt = params.find("prompt_len_dist")
                    ? partition::parse_length_dist(text_of(params, "prompt_len_dist", ""), "prompt_len_dist")
                    : partition::fixed_length(prompt_len);
  spec.output = params.find("tokens_dist")
                    ? partition::parse_length_dist(text_of(params, "tokens_dist", ""), "tokens_dist")
                    : partition::fixed_length(tokens);
  spec.seed = static_cast<uint64_t>(number_of(params, "seed", 1));
  config.requests = partition::generate_workload(spec);
  describe_workload(spec, config.workload);
  return config;
}

ServeCommand::ServeCommand(CLI::App& app)
    : cmd_(app.add_subcommand("serve",
                              "serve a stream of requests through the static pipeline: latency percentiles, "
                              "throughput, goodput, energy")) {
  cmd_->add_option("--model", model_, "HDF5 model file (default: the built-in tiny model)");
  chips_option_ =
      cmd_->add_option("--chips", request_.n_chips, "number of simulated chips (the system)")->capture_default_str();
  cmd_->add_option("--system", system_, "system preset name or system file (name = value lines)")
      ->capture_default_str();
  cmd_->add_option("--set", overrides_, "override a hardware or power parameter, e.g. --set power_idle_w=80")
      ->take_all();
  tp_option_ = cmd_->add_option("--tp", request_.tp, "tensor-parallel chips per stage (default: planner's choice)");
  pp_option_ = cmd_->add_option("--pp", request_.pp, "pipeline stages (default: planner's choice)");
  replicas_option_ =
      cmd_->add_option("--replicas", request_.replicas, "pipeline replicas (default: as many as the system holds)");
  context_option_ = cmd_->add_option("--context", request_.context,
                                     "KV positions per slot (default: the longest request, in whole pages)");
  block_option_ = cmd_->add_option("--block-tokens", request_.block_tokens, "largest prefill chunk in tokens")
                      ->capture_default_str();
  slots_option_ = cmd_->add_option("--slots", slots_,
                                   "request slots per replica; without --tp/--pp, the layout is planned for them "
                                   "(default: as many as the SRAM holds)");
  workload_option_ =
      cmd_->add_option("--workload", workload_, "trace CSV: arrived_at,num_prefill_tokens,num_decode_tokens[,prompt]");
  rate_option_ = cmd_->add_option("--rate", rate_, "generated workload: requests per second");
  requests_option_ = cmd_->add_option("--requests", n_requests_, "generated workload: number of requests");
  arrivals_option_ = cmd_->add_option("--arrivals", arrivals_, "poisson or gamma")->capture_default_str();
  cv_option_ =
      cmd_->add_option("--cv", cv_, "gamma arrivals: coefficient of variation of the gaps")->capture_default_str();
  prompt_len_option_ = cmd_->add_option("--prompt-len", prompt_len_, "prompt length of every request (default 16)");
  prompt_dist_option_ =
      cmd_->add_option("--prompt-len-dist", prompt_dist_, "prompt lengths: uniform:A:B or zipf:S:MAX");
  tokens_option_ = cmd_->add_option("--tokens", tokens_, "output tokens of every request (default 16)");
  tokens_dist_option_ = cmd_->add_option("--tokens-dist", tokens_dist_, "output lengths: uniform:A:B or zipf:S:MAX");
  prompt_len_option_->excludes(prompt_dist_option_);
  tokens_option_->excludes(tokens_dist_option_);
  for (CLI::Option* generated : {rate_option_, requests_option_, arrivals_option_, cv_option_, prompt_len_option_,
                                 prompt_dist_option_, tokens_option_, tokens_dist_option_})
    workload_option_->excludes(generated);
  cmd_->add_option("--seed", seed_, "seed of the generated workload")->capture_default_str();
  cmd_->add_option("--policy", policy_, "scheduling policy: decode-priority or static-batch")->capture_default_str();
  cmd_->add_option("--router", router_, "request router over the replicas: round-robin or least-loaded")
      ->capture_default_str();
  cmd_->add_option("--kv-page-tokens", kv_page_tokens_, "KV-cache page in tokens (SHIP: 128-512)")
      ->capture_default_str();
  kv_pages_option_ = cmd_->add_option("--kv-pages", kv_pages_,
                                      "pages of each replica's shared KV pool, or sram: all the SRAM left "
                                      "(default: every slot's context; the SRAM's pool when --slots outnumber them)");
  slo_ttft_option_ = cmd_->add_option("--slo-ttft-ms", slo_ttft_ms_, "time-to-first-token objective for goodput");
  slo_tpot_option_ = cmd_->add_option("--slo-tpot-ms", slo_tpot_ms_, "time-per-output-token objective for goodput");
  cmd_->add_flag("--timing-only", timing_only_, "simulate only: no weights, no tokens (the same modelled figures)");
  cmd_->add_option("--out", out_, "result HDF5 file (/requests, /timeline, summary)");
  cmd_->add_option("--csv", csv_, "per-request CSV");
  cmd_->add_option("--trace", trace_, "Perfetto trace of the requests through the replicas");
  cmd_->add_option("--step-timeout", faults_.step_timeout_s, "seconds a chip may wait for a transfer (functional)")
      ->capture_default_str();
  cmd_->add_flag("--json", json_, "print one JSON object on stdout (rank 0)");
  cmd_->add_flag("--force", force_, "replace existing output files");
}

runtime::ServeConfig ServeCommand::make_config(int n_ranks) const {
  check_count(chips_option_, request_.n_chips);
  check_count(tp_option_, request_.tp, "the planner's choice");
  check_count(pp_option_, request_.pp, "the planner's choice");
  check_count(replicas_option_, request_.replicas, "as many as the system holds");
  check_count(context_option_, request_.context, "the longest request");
  check_count(block_option_, request_.block_tokens);
  check_count(slots_option_, slots_, "as many as fit");
  if (!(faults_.step_timeout_s >= 0 && faults_.step_timeout_s <= runtime::max_step_timeout_s))
    throw Error("--step-timeout must be 0 (wait forever) .. " + format_number(runtime::max_step_timeout_s) + " seconds",
                ExitCode::usage);
  runtime::ServeConfig config;
  config.slo.ttft_s = slo_seconds(slo_ttft_option_, slo_ttft_ms_);
  config.slo.tpot_s = slo_seconds(slo_tpot_option_, slo_tpot_ms_);
  config.options.policy = partition::parse_policy(policy_);
  config.options.router = partition::parse_router(router_);
  if (kv_page_tokens_ < 1 || kv_page_tokens_ > (int64_t{1} << 24))
    throw Error("--kv-page-tokens must be 1 .. 16777216 (got " + std::to_string(kv_page_tokens_) + ")",
                ExitCode::usage);
  config.options.kv_page_tokens = kv_page_tokens_;
  if (kv_pages_option_->count() > 0) {
    if (kv_pages_ == "sram") {
      config.kv_pages = runtime::ServeConfig::kv_pool_sram;
    } else {
      const bool count = !kv_pages_.empty() && kv_pages_.size() <= 15 &&
                         std::all_of(kv_pages_.begin(), kv_pages_.end(), [](char c) { return c >= '0' && c <= '9'; });
      if (!count || std::stoll(kv_pages_) < 1)
        throw Error("--kv-pages must be a count of pages or sram (got \"" + kv_pages_ + "\")", ExitCode::usage);
      config.kv_pages = std::stoll(kv_pages_);
    }
  }
  if (workload_option_->count() > 0) {
    config.requests =
        partition::parse_workload_csv(io::read_text_file(workload_, "workload", max_workload_bytes), workload_);
    config.workload.set("workload", workload_);
  } else {
    if (rate_option_->count() == 0 || requests_option_->count() == 0)
      throw Error("lpurt serve needs a workload: --workload FILE.csv, or --rate R --requests K", ExitCode::usage);
    if (cv_option_->count() > 0 && arrivals_ != "gamma")
      throw Error("--cv applies to --arrivals gamma (Poisson arrivals have a coefficient of variation of 1)",
                  ExitCode::usage);
    partition::WorkloadSpec spec;
    spec.rate_per_s = rate_;
    spec.n_requests = n_requests_;
    spec.arrivals = partition::parse_arrivals(arrivals_);
    spec.cv = spec.arrivals == partition::Arrivals::gamma ? cv_ : 1.0;
    spec.prompt =
        prompt_dist_option_->count() > 0
            ? partition::parse_length_dist(prompt_dist_, "--prompt-len-dist")
            : partition::fixed_length(prompt_len_option_->count() > 0 ? prompt_len_ : runtime::default_prompt_len);
    spec.output = tokens_dist_option_->count() > 0
                      ? partition::parse_length_dist(tokens_dist_, "--tokens-dist")
                      : partition::fixed_length(tokens_option_->count() > 0 ? tokens_ : runtime::default_output_tokens);
    spec.seed = seed_;
    config.requests = partition::generate_workload(spec);
    describe_workload(spec, config.workload);
  }
  config.request = request_;
  config.slots = slots_;
  config.timing_only = timing_only_;
  config.n_ranks = n_ranks;
  config.out_path = out_;
  config.csv_path = csv_;
  config.trace_path = trace_;
  config.force = force_;
  config.faults = faults_;
  return config;
}

int ServeCommand::run(int rank, int n_ranks) {
  runtime::ServeConfig config;
  std::unique_ptr<io::WeightSource> source;
  std::unique_ptr<runtime::ServeSession> session;
  chip::ChipSpec hardware;
  // Every rank checks the options alike; agreeing on the outcome prints a bad one once.
  runtime::agree_on_setup(MPI_COMM_WORLD, [&] {
    config = make_config(n_ranks);
    hardware = load_system(system_);
    for (const auto& o : overrides_) chip::apply_assignment(hardware, o, "--set " + o);
    hardware.validate();
    source = model_.empty() ? io::default_model() : open_model_file(model_);
    partition::check_request(source->config(), hardware, config.request);
    // Rank 0 writes the outputs, so rank 0 alone checks them, before the session's collective setup.
    if (rank == 0)
      for (const std::string* path : {&out_, &csv_, &trace_})
        if (!path->empty()) io::check_writable(*path, force_);
  });
  // Apart: the session's setup is collective, so every rank must enter it, or none.
  runtime::agree_on_setup(MPI_COMM_WORLD, [&] {
    session = std::make_unique<runtime::ServeSession>(*source, hardware, config, MPI_COMM_WORLD);
  });
  std::function<void(int64_t, int64_t)> progress;
  if (rank == 0 && isatty(STDERR_FILENO))
    progress = [](int64_t done, int64_t total) {
      if (done == total || (total >= 10 && done % (total / 10) < 256))
        std::fprintf(stderr, "\r[lpurt] serve: turn %lld/%lld%s", static_cast<long long>(done),
                     static_cast<long long>(total), done == total ? "\n" : "");
    };
  const io::Record summary = session->run(progress);
  if (rank != 0) return 0;
  if (json_) {
    std::printf("%s\n", summary.to_json().c_str());
    return 0;
  }
  const partition::Plan& plan = session->plan();
  std::printf(
      "lpurt serve: %s on %lld chip(s) = tp %lld x pp %lld x %lld replica(s) of %lld slot(s), %s, router %s%s\n",
      field<std::string>(summary, "model").c_str(), static_cast<long long>(plan.system_chips),
      static_cast<long long>(plan.tp), static_cast<long long>(plan.pp), static_cast<long long>(plan.replicas),
      static_cast<long long>(plan.shape.n_slots), field<std::string>(summary, "policy").c_str(),
      field<std::string>(summary, "router").c_str(), timing_only_ ? " (timing-only)" : "");
  std::printf("requests  %lld: %lld completed, %lld rejected (longer than a slot's %lld KV positions or the pool)\n",
              static_cast<long long>(field<int64_t>(summary, "requests")),
              static_cast<long long>(field<int64_t>(summary, "completed")),
              static_cast<long long>(field<int64_t>(summary, "rejected")), static_cast<long long>(plan.shape.context));
  std::printf("KV pool   %lld pages of %lld tokens per replica%s, at most %lld in use, %lld preemptions\n",
              static_cast<long long>(field<int64_t>(summary, "kv_pages_per_replica")),
              static_cast<long long>(field<int64_t>(summary, "kv_page_tokens")),
              plan.shape.kv_pool_tokens > 0 ? " shared by the slots" : " (every slot's context)",
              static_cast<long long>(field<int64_t>(summary, "kv_pages_in_use_max")),
              static_cast<long long>(field<int64_t>(summary, "preemptions")));
  auto line = [&](const char* what, const char* key) {
    const std::string k = key;
    std::printf("%-9s p50 %s, p90 %s, p99 %s\n", what,
                format_seconds(field<double>(summary, (k + "_p50_s").c_str())).c_str(),
                format_seconds(field<double>(summary, (k + "_p90_s").c_str())).c_str(),
                format_seconds(field<double>(summary, (k + "_p99_s").c_str())).c_str());
  };
  line("TTFT", "ttft");
  line("TPOT", "tpot");
  line("e2e", "e2e");
  std::printf("makespan  %s: %.1f output tokens/s, %.2f requests/s, goodput %.2f requests/s (%lld meet the SLOs)\n",
              format_seconds(field<double>(summary, "makespan_s")).c_str(),
              field<double>(summary, "output_tokens_per_s"), field<double>(summary, "requests_per_s"),
              field<double>(summary, "goodput_requests_per_s"),
              static_cast<long long>(field<int64_t>(summary, "meeting_slo")));
  // No request meeting the SLOs leaves no user to divide the chips by: say so rather than print nan.
  const double chips_per_user = field<double>(summary, "chips_per_user_at_slo");
  char per_user[64];
  if (std::isfinite(chips_per_user))
    std::snprintf(per_user, sizeof per_user, "%.1f chips per user at the SLO", chips_per_user);
  else
    std::snprintf(per_user, sizeof per_user, "no request meets the SLOs");
  std::printf("energy    %.3g J per output token, %.3g tokens per kWh, mean power %.3g kW, %s\n",
              field<double>(summary, "joules_per_output_token"), field<double>(summary, "output_tokens_per_kwh"),
              field<double>(summary, "mean_power_w") / 1e3, per_user);
  std::printf("host      wall %s\n", format_seconds(field<double>(summary, "host_wall_s")).c_str());
  for (const auto& [what, path] : {std::pair{"result", out_}, {"csv", csv_}, {"trace", trace_}})
    if (!path.empty()) std::printf("%-9s %s\n", what, path.c_str());
  return 0;
}

}  // namespace lpurt::jobs
