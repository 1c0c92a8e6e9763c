#include "jobs/cli.hpp"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <numeric>
#include <optional>
#include <sstream>
#include <tuple>
#include <unistd.h>

#include "chip/error.hpp"
#include "chip/hardware.hpp"
#include "chip/model_config.hpp"
#include "io/atomic_file.hpp"
#include "io/error.hpp"
#include "io/hf_checkpoint.hpp"
#include "io/hf_config.hpp"
#include "io/model_file.hpp"
#include "io/tokenizer.hpp"
#include "partition/collective.hpp"
#include "partition/request.hpp"
#include "partition/timing.hpp"
#include "jobs/calibrate.hpp"
#include "jobs/format.hpp"
#include "jobs/open_model.hpp"
#include "jobs/serve.hpp"
#include "jobs/study.hpp"
#include "jobs/sweep.hpp"
#include "runtime/mpi.hpp"
#include "runtime/run.hpp"

namespace lpurt::jobs {

namespace {

struct SystemOptions {
  std::string system = "groq-lpu-v1";
  std::vector<std::string> overrides;  // name=value

  void add_to(CLI::App* cmd) {
    cmd->add_option("--system", system, "system preset name or system file (name = value lines)")
        ->capture_default_str();
    cmd->add_option("--set", overrides, "override a hardware parameter, e.g. --set link_bytes_per_s=28e9")
        ->take_all();
  }
  chip::ChipSpec resolve() const {
    chip::ChipSpec spec = load_system(system);
    for (const auto& o : overrides) chip::apply_assignment(spec, o, "--set " + o);
    spec.validate();
    return spec;
  }
};

/// The one rule of every count flag: left out, it takes its default (`left_out` names it for --tp, --pp,
/// --replicas and --context); given, it must be at least 1. Upper limits (the chips a topology holds,
/// the sequences that fit) are partition::check_request's.
void check_given_count(const CLI::Option* option, int64_t value, const char* left_out = nullptr) {
  if (option->count() == 0 || value >= 1) return;
  throw Error(option->get_name() + " must be at least 1 (got " + std::to_string(value) + ")" +
                  (left_out ? std::string("; leave it out for ") + left_out : std::string()),
              ExitCode::usage);
}

/// NaN or a negative timeout would wait forever; 0 is the documented "wait forever".
void check_step_timeout(double seconds) {
  if (!(seconds >= 0 && seconds <= runtime::max_step_timeout_s))
    throw Error("--step-timeout must be 0 (wait forever) .. " + format_number(runtime::max_step_timeout_s) +
                    " seconds (got " + format_number(seconds) + ")",
                ExitCode::usage);
}

struct LayoutOptions {
  std::string model;
  partition::PlanRequest request;
  bool json = false;
  std::string moe_ffn_cuts = "auto";
  CLI::Option *chips_option = nullptr, *tp_option = nullptr, *max_tp_option = nullptr, *pp_option = nullptr, *context_option = nullptr,
              *batch_option = nullptr, *replicas_option = nullptr, *block_tokens_option = nullptr;

  void add_to(CLI::App* cmd) {
    cmd->add_option("--model", model, "HDF5 model file (default: the built-in tiny model)");
    chips_option = cmd->add_option("--chips", request.n_chips, "number of simulated chips")->capture_default_str();
    tp_option = cmd->add_option("--tp", request.tp, "tensor-parallel chips per stage (default: planner's choice)");
    pp_option = cmd->add_option("--pp", request.pp, "pipeline stages (default: planner's choice)");
    max_tp_option = cmd->add_option("--max-tp", request.max_tp,
                                    "widest tp the planner tries without --tp: within a node any, beyond it whole nodes "
                                    "(default: a node's 8 chips)");
    context_option = cmd->add_option("--context", request.context,
                                     "KV-cache positions per sequence, at least 1 (default: the model's max_seq_len)");
    batch_option = cmd->add_option("--batch", request.batch, "sequences resident at once (spread over the replicas)")
                       ->capture_default_str();
    replicas_option =
        cmd->add_option("--replicas", request.replicas, "identical pipelines (data parallel; default: planner's choice)");
    block_tokens_option =
        cmd->add_option("--block-tokens", request.block_tokens, "prefill chunk in tokens, at least 1")
            ->capture_default_str();
    cmd->add_option("--moe-ffn-cuts", moe_ffn_cuts,
                    "where MoE stages may begin: also inside an MoE FFN (allowed), only between whole ones (whole), "
                    "or the faster of the two (auto)")
        ->check(CLI::IsMember({"auto", "allowed", "whole"}))
        ->each([this](const std::string& kind) {
          request.moe_ffn_cuts = kind == "allowed" ? std::optional(partition::MoeFfnCuts::allowed)
                                 : kind == "whole" ? std::optional(partition::MoeFfnCuts::whole)
                                                   : std::nullopt;
        })
        ->capture_default_str();
    cmd->add_flag("--json", json, "print one JSON object on stdout (rank 0)");
  }
  /// The given layout values, each at least 1: before the model is opened.
  void check() const {
    check_given_count(chips_option, request.n_chips);
    check_given_count(tp_option, request.tp, "the planner's choice");
    check_given_count(max_tp_option, request.max_tp, "a node's chips");
    check_given_count(pp_option, request.pp, "the planner's choice");
    check_given_count(context_option, request.context, "the model's max_seq_len");
    check_given_count(batch_option, request.batch);
    check_given_count(replicas_option, request.replicas, "the planner's choice");
    check_given_count(block_tokens_option, request.block_tokens);
  }

  std::unique_ptr<io::WeightSource> open_model() const {
    check();
    if (model.empty()) return io::default_model();
    return open_model_file(model);
  }
};

std::vector<int32_t> parse_prompt(const std::string& text) {
  std::vector<int32_t> tokens;
  if (text.empty() || text.back() == ',')
    throw Error("--prompt \"" + text + "\" is not a list of token ids (expected e.g. 1,2,3)", ExitCode::usage);
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    std::size_t used = 0;
    long long v = -1;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != item.size() || v < 0 || v > INT32_MAX)
      throw Error("--prompt: \"" + item + "\" is not a token id (expected comma-separated integers >= 0)",
                  ExitCode::usage);
    tokens.push_back(static_cast<int32_t>(v));
  }
  return tokens;
}

/// "4-5@3": every transfer from chip 4 to chip 5 in forward call 3.
runtime::LinkFault parse_link_fault(const std::string& spec) {
  runtime::LinkFault f;
  char tail = 0;
  long long from = -1, to = -1, call = -1;
  if (std::sscanf(spec.c_str(), "%lld-%lld@%lld%c", &from, &to, &call, &tail) != 3 || from < 0 || to < 0 || call < 0)
    throw Error("--inject-link-fault " + spec + ": expected FROM-TO@CALL, e.g. 4-5@3 (chips 4 to 5, forward call 3)",
                ExitCode::usage);
  f.from = from, f.to = to, f.call = call;
  return f;
}

/// One prompt per sequence: --prompt "1,2,3" (every sequence) or "1,2;3,4" (one per sequence), or a
/// synthetic prompt of --prompt-len tokens for each sequence.
std::vector<std::vector<int32_t>> make_prompts(bool given, const std::string& text, int64_t prompt_len, int64_t batch,
                                               int64_t vocab_size) {
  if (batch < 1) throw Error("--batch must be at least 1 (got " + std::to_string(batch) + ")", ExitCode::usage);
  std::vector<std::vector<int32_t>> prompts;
  if (!given) {
    // Checked here, before synthetic_prompt sizes a vector with it.
    if (prompt_len < 1) throw Error("--prompt-len must be at least 1 (got " + std::to_string(prompt_len) + ")", ExitCode::usage);
    for (int64_t b = 0; b < batch; ++b) prompts.push_back(runtime::synthetic_prompt(prompt_len, vocab_size, b));
    return prompts;
  }
  std::stringstream in(text);
  std::string one;
  while (std::getline(in, one, ';')) prompts.push_back(parse_prompt(one));
  if (prompts.empty()) prompts.push_back(parse_prompt(text));  // "" is rejected by parse_prompt
  if (prompts.size() == 1) prompts.resize(static_cast<std::size_t>(batch), prompts.front());
  if (static_cast<int64_t>(prompts.size()) != batch)
    throw Error("--prompt gives " + std::to_string(prompts.size()) + " prompts for a batch of " + std::to_string(batch) +
                    " (give one, or one per sequence separated by ';')",
                ExitCode::usage);
  return prompts;
}

/// Rank-0 progress on stderr: at most ~10 lines per task, and only when someone is watching.
std::function<void(int64_t, int64_t)> progress_printer(const char* what, int rank) {
  if (rank != 0 || !isatty(STDERR_FILENO)) return {};
  return [what](int64_t done, int64_t total) {
    if (done == total || (total >= 10 && done % (total / 10) == 0))
      std::fprintf(stderr, "\r[lpurt] %s %lld/%lld%s", what, static_cast<long long>(done),
                   static_cast<long long>(total), done == total ? "\n" : "");
  };
}

/// "4 chip(s) = tp 1 x pp 1 x 4 replica(s), 3 idle (batch 1 fills 1 replica)": replicas beyond the batch
/// hold no sequence, and a reader comparing chip counts needs to see that.
/// "432 chip(s) = tp 8 x pp 54 x 1 replica(s), 144 of the system's 576 idle".
std::string layout_text(int64_t system_chips, int64_t tp, int64_t pp, int64_t replicas, int64_t batch) {
  const int64_t used = tp * pp * replicas;
  std::string text = std::to_string(used) + " chip(s) = tp " + std::to_string(tp) + " x pp " + std::to_string(pp) +
                     " x " + std::to_string(replicas) + " replica(s)";
  if (system_chips > used)
    text += ", " + std::to_string(system_chips - used) + " of the system's " + std::to_string(system_chips) + " idle";
  if (batch < replicas)
    text += " (batch " + std::to_string(batch) + " fills " + std::to_string(batch) + " replica" + (batch == 1 ? "" : "s") + ")";
  return text;
}

void print_plan_table(const partition::PlanChoice& choice, const std::string& model_name, int64_t prompt_tokens,
                      int64_t output_tokens) {
  const partition::Plan& plan = choice.plan;
  const auto m = partition::modelled_times(choice, prompt_tokens, output_tokens);
  const double us_per_cycle = 1e6 / plan.hardware.clock_hz;
  std::printf("model   %s: %s, %lld layers, D=%lld, %s of weights\n", model_name.c_str(),
              chip::architecture_name(plan.model.architecture), static_cast<long long>(plan.model.n_layers),
              static_cast<long long>(plan.model.hidden_size),
              chip::format_bytes(static_cast<double>(plan.model.weight_bytes())).c_str());
  std::printf("system  %s: %s SRAM per chip, %.0f MHz, %.1f TB/s weight streaming, %s topology, %.1f GB/s links, "
              "%.0f ns per hop\n",
              plan.hardware.name.c_str(), chip::format_bytes(static_cast<double>(plan.hardware.sram_bytes)).c_str(),
              plan.hardware.clock_hz / 1e6, plan.hardware.weight_stream_bytes_per_s() / 1e12,
              plan.hardware.topology.c_str(), plan.hardware.link_bytes_per_s / 1e9, plan.hardware.hop_latency_ns);
  if (!plan.hardware.uniform()) {
    std::printf("heterogeneous:");
    for (const auto& [chip, f] : plan.hardware.chip_speed_factors)
      std::printf(" chip %lld at %.2fx speed;", static_cast<long long>(chip), f);
    for (const auto& [link, f] : plan.hardware.link_bandwidth_factors)
      std::printf(" link %lld-%lld at %.2fx bandwidth;", static_cast<long long>(link.first),
                  static_cast<long long>(link.second), f);
    std::printf(" decode figures are the slowest replica's\n");
  }
  std::printf("layout  %s, context %lld, batch %lld, prefill chunks of %lld tokens\n",
              layout_text(plan.system_chips, plan.tp, plan.pp, plan.replicas, plan.batch).c_str(),
              static_cast<long long>(plan.shape.context), static_cast<long long>(plan.batch),
              static_cast<long long>(plan.shape.block_tokens));
  const auto moved = std::find_if(plan.chips.begin(), plan.chips.end(),
                                  [](const partition::ChipPlan& c) { return c.network_chip != c.chip; });
  if (moved != plan.chips.end())
    std::printf("placement: tp groups start at the next dragonfly rack rather than straddle two (racks of 72 chips "
                "share one global link per pair); from chip %lld on, chip c sits at a later network chip\n",
                static_cast<long long>(moved->chip));
  std::printf("capacity: at context %lld at most %lld sequences fit; at batch %lld the context can reach %lld\n",
              static_cast<long long>(plan.shape.context), static_cast<long long>(plan.max_batch()),
              static_cast<long long>(plan.batch), static_cast<long long>(plan.max_context()));
  std::printf("\n%6s %6s %4s %9s %11s %11s %11s %11s %6s %12s %11s\n", "chip", "stage", "tp", "parts", "weights",
              "kv_cache", "activations", "total", "sram%", "compute_us", "sends_us");
  for (const auto& c : plan.chips) {
    if (plan.n_chips() > 48 && c.chip >= 16 && c.chip < plan.n_chips() - 8) {
      if (c.chip == 16) std::printf("%6s\n", "...");
      continue;
    }
    // Parts as "3a-4g": layer 3's attention through layer 4's FFN input half (a: attention, g: the FFN's
    // gate/up half, d: its w_down half).
    auto part_name = [](int64_t part) {
      static const char letter[] = {'a', 'g', 'd'};
      return std::to_string(chip::part_layer(part)) + letter[static_cast<int>(chip::part_kind(part))];
    };
    char parts[48];
    std::snprintf(parts, sizeof parts, "%s-%s", part_name(c.range.part_begin).c_str(), part_name(c.range.part_end - 1).c_str());
    const auto i = static_cast<std::size_t>(c.chip);
    std::printf("%6lld %6lld %4lld %9s %11s %11s %11s %11s %5.1f%% %12.2f %11.2f\n", static_cast<long long>(c.chip),
                static_cast<long long>(c.stage), static_cast<long long>(c.tp_rank), parts,
                chip::format_bytes(static_cast<double>(c.sram.weight_bytes)).c_str(),
                chip::format_bytes(static_cast<double>(c.sram.kv_cache_bytes)).c_str(),
                chip::format_bytes(static_cast<double>(c.sram.activation_bytes)).c_str(),
                chip::format_bytes(static_cast<double>(c.sram.total_bytes())).c_str(),
                100.0 * static_cast<double>(c.sram.total_bytes()) / static_cast<double>(plan.hardware.sram_bytes),
                static_cast<double>(m.decode.chip_compute_cycles[i]) * us_per_cycle,
                static_cast<double>(m.decode.chip_send_cycles[i]) * us_per_cycle);
  }
  std::printf("\ndecode step (compute_us, sends_us: busy time of each chip in one step)\n");
  std::printf("  %lld transfers, %s on links; busiest link %lld -> %lld, busy %.2f us of the %.2f us step\n",
              static_cast<long long>(m.decode.n_transfers),
              chip::format_bytes(static_cast<double>(m.decode.transfer_bytes)).c_str(),
              static_cast<long long>(m.decode.busiest_link.from), static_cast<long long>(m.decode.busiest_link.to),
              static_cast<double>(m.decode.busiest_link_cycles) * us_per_cycle,
              static_cast<double>(m.decode.makespan_cycles) * us_per_cycle);
  if (plan.pp > 1) {
    const auto& stages = m.decode_stage_cycles;
    const auto busiest = std::max_element(stages.begin(), stages.end());
    const auto lightest = std::min_element(stages.begin(), stages.end());
    const double mean = static_cast<double>(std::accumulate(stages.begin(), stages.end(), int64_t{0})) /
                        static_cast<double>(stages.size());
    std::printf("  stages: busiest %lld at %.2f us, lightest %lld at %.2f us, mean %.2f us; with the pipeline full the "
                "busiest sets the period, %.1f%% above the mean\n",
                static_cast<long long>(busiest - stages.begin()), static_cast<double>(*busiest) * us_per_cycle,
                static_cast<long long>(lightest - stages.begin()), static_cast<double>(*lightest) * us_per_cycle,
                mean * us_per_cycle, 100.0 * (static_cast<double>(*busiest) / mean - 1.0));
  }
  if (plan.model.is_moe()) {
    const std::string sliced = plan.tp > plan.model.n_experts
                                   ? " (each expert sliced by FFN columns over up to " +
                                         std::to_string(chip::ceil_div(plan.tp, plan.model.n_experts)) + " chips)"
                                   : std::string();
    std::printf("%s: experts split over each stage's %lld chips%s; modelled times assume the router spreads "
                "tokens uniformly over the %lld experts\n",
                chip::architecture_name(plan.model.architecture), static_cast<long long>(plan.tp), sliced.c_str(),
                static_cast<long long>(plan.model.n_experts));
  }
  std::printf("modelled (prompt %lld, %lld output tokens): time to first token %s, per output token %s, "
              "%.1f tokens/s per user, %.1f tokens/s per system\n",
              static_cast<long long>(prompt_tokens), static_cast<long long>(output_tokens),
              format_seconds(m.ttft_s).c_str(), format_seconds(m.tpot_s).c_str(), m.tokens_per_s_user,
              m.tokens_per_s_system);
}

/// --prompt-len and --tokens: the lengths a command models (plan) or runs (run, sweep).
struct LengthOptions {
  int64_t prompt_len = runtime::default_prompt_len;
  int64_t tokens = runtime::default_output_tokens;
  CLI::Option* prompt_len_option = nullptr;
  CLI::Option* tokens_option = nullptr;

  void add_to(CLI::App* cmd, const char* prompt_help, const char* tokens_help) {
    prompt_len_option = cmd->add_option("--prompt-len", prompt_len, prompt_help)->capture_default_str();
    tokens_option = cmd->add_option("--tokens", tokens, tokens_help)->capture_default_str();
  }
};

/// "1.0 MB, 1.02M parameters" for each preset: what gen-model --help lists.
std::string preset_sizes() {
  std::string text;
  for (const auto& name : chip::model_preset_names()) {
    const chip::ModelConfig cfg = chip::model_preset(name);
    const double n = static_cast<double>(cfg.n_parameters());
    char line[160];
    std::snprintf(line, sizeof line, "\n  %-15s %5.3g%s parameters, %s", name.c_str(), n >= 1e9 ? n / 1e9 : n / 1e6,
                  n >= 1e9 ? "B" : "M", chip::format_bytes(static_cast<double>(cfg.weight_bytes())).c_str());
    text += line;
  }
  return text;
}

/// gen-model's and import's progress on stderr, tty or not: a line at each tenth of the bytes and at least
/// every 10 s, so that a long write shows it is moving without one line per tensor. Only for files of at
/// least progress_min_bytes: smaller ones are written in a fraction of a second.
constexpr int64_t progress_min_bytes = int64_t{32} << 20;
class WriteProgress {
 public:
  WriteProgress(const chip::ModelConfig& cfg, const char* command)
      : command_(command), t0_(std::chrono::steady_clock::now()), last_(t0_) {
    int64_t bytes = 0;
    for (const auto& id : chip::model_tensors(cfg)) bytes_after_.push_back(bytes += chip::tensor_bytes(cfg, id));
  }
  void operator()(int64_t tensors_done, int64_t) {
    const int64_t total = bytes_after_.back(), done = bytes_after_[static_cast<std::size_t>(tensors_done - 1)];
    const auto now = std::chrono::steady_clock::now();
    const int tenth = static_cast<int>(10 * done / total);
    if (tenth == tenth_ && now - last_ < std::chrono::seconds(10)) return;
    tenth_ = tenth, last_ = now;
    const double s = std::chrono::duration<double>(now - t0_).count();
    const double fraction = static_cast<double>(done) / static_cast<double>(total);
    std::fprintf(stderr, "[lpurt] %s: %3.0f%% (%s of %s) in %.1f s%s\n", command_, 100 * fraction,
                 chip::format_bytes(static_cast<double>(done)).c_str(),
                 chip::format_bytes(static_cast<double>(total)).c_str(), s,
                 done < total && s >= 1
                     ? (", about " + std::to_string(static_cast<int64_t>(s * (1 - fraction) / fraction)) + " s left")
                           .c_str()
                     : "");
  }

 private:
  const char* command_;
  std::vector<int64_t> bytes_after_;  // [tensor] bytes written once it is done
  std::chrono::steady_clock::time_point t0_, last_;
  int tenth_ = 0;
};

/// Before any byte is written: the size on stderr, and a refusal naming both sizes if it cannot fit.
/// Weights are written before HDF5's metadata, so the data bytes are what must fit at least. `what` names
/// the model in the refusal ("preset small"), `remedy` ends it.
void check_space(const std::string& out, const chip::ModelConfig& cfg, const std::string& what, const char* command,
                 const char* remedy, int rank) {
  const int64_t needed = cfg.weight_bytes();
  const std::string folder = std::filesystem::absolute(out).parent_path().string();
  const int64_t available = io::available_bytes(folder);
  if (needed > available)
    throw io::FileError(out + ": " + what + " needs " + std::to_string(needed) + " bytes (" +
                            chip::format_bytes(static_cast<double>(needed)) + ") but " + folder + " has " +
                            std::to_string(available) + " bytes (" + chip::format_bytes(static_cast<double>(available)) +
                            ") free; " + remedy,
                        ExitCode::io);
  if (rank == 0)
    std::fprintf(stderr, "[lpurt] %s: writing %s (%lld parameters) to %s, %s free there\n", command,
                 chip::format_bytes(static_cast<double>(needed)).c_str(), static_cast<long long>(cfg.n_parameters()),
                 out.c_str(), chip::format_bytes(static_cast<double>(available)).c_str());
}

struct GenModelCommand {
  CLI::App* cmd;
  std::string preset, hf_config, out, tokenizer_path;
  uint64_t seed = 1;
  bool config_only = false, force = false;

  explicit GenModelCommand(CLI::App& app)
      : cmd(app.add_subcommand("gen-model", "write a model file with deterministic synthetic weights")) {
    auto* preset_option =
        cmd->add_option("--preset", preset, "model shape, one of (sizes with weights):" + preset_sizes());
    cmd->add_option("--hf-config", hf_config,
                    "model shape from a Hugging Face config.json instead of a preset (model_type llama, mistral, "
                    "mixtral, qwen2, qwen3 or qwen3_moe)")
        ->excludes(preset_option);
    cmd->add_option("--out", out, "output HDF5 file")->required();
    cmd->add_option("--seed", seed, "weight seed")->capture_default_str();
    cmd->add_flag("--config-only", config_only, "write the configuration only (for --timing-only studies)");
    cmd->add_option("--tokenizer", tokenizer_path,
                    "embed this SentencePiece model (tokenizer.model) in the file, for run --prompt-text");
    cmd->add_flag("--force", force, "replace an existing file");
  }

  int run(int rank) const {
    if (preset.empty() && hf_config.empty())
      throw Error("gen-model needs the model's shape: --preset NAME or --hf-config config.json", ExitCode::usage);
    const bool from_preset = hf_config.empty();
    const std::string shape = from_preset ? "preset " + preset : hf_config;
    io::SyntheticModel source(from_preset ? chip::model_preset(preset) : io::read_hf_config(hf_config), seed,
                              from_preset ? preset : hf_config);
    io::check_writable(out, force);
    std::optional<io::Tokenizer> tokenizer;
    if (!tokenizer_path.empty()) {
      tokenizer = io::Tokenizer::from_file(tokenizer_path);
      tokenizer->check_fits(source.config().vocab_size, "preset " + preset);
    }
    std::function<void(int64_t, int64_t)> progress;
    if (!config_only) {
      check_space(out, source.config(), shape, "gen-model", "free space, choose another folder or use --config-only",
                  rank);
      if (rank == 0 && source.config().weight_bytes() >= progress_min_bytes)
        progress = WriteProgress(source.config(), "gen-model");
    }
    const auto t0 = std::chrono::steady_clock::now();
    std::function<void(const std::string&)> add_tokenizer;
    if (tokenizer)
      add_tokenizer = [&](const std::string& tmp) {
        io::write_embedded_tokenizer(tmp, *tokenizer, source.config().vocab_size);
      };
    io::write_model_file(out, source, config_only, force, progress, add_tokenizer);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("wrote %s: %s (%s), %lld parameters, %s%s in %.2f s\n", out.c_str(), shape.c_str(),
                chip::architecture_name(source.config().architecture),
                static_cast<long long>(source.config().n_parameters()),
                chip::format_bytes(static_cast<double>(source.config().weight_bytes())).c_str(),
                config_only ? " (configuration only)" : "", s);
    return 0;
  }
};

struct ImportCommand {
  CLI::App* cmd;
  std::string directory, out;
  bool force = false;

  explicit ImportCommand(CLI::App& app)
      : cmd(app.add_subcommand("import", "convert a Hugging Face checkpoint (config.json + safetensors) to a model "
                                         "file: int8 weights with per-row scales")) {
    cmd->add_option("checkpoint", directory, "Hugging Face checkpoint directory (config.json, model.safetensors or "
                                             "model.safetensors.index.json and its shards)")
        ->required();
    cmd->add_option("--out", out, "output HDF5 model file")->required();
    cmd->add_flag("--force", force, "replace an existing file");
  }

  int run(int rank) const {
    io::check_writable(out, force);
    // Every tensor's presence, dtype, shape and byte range, before a byte is written.
    const auto checkpoint = io::HfCheckpoint::open(directory);
    const chip::ModelConfig& cfg = checkpoint->config();
    if (rank == 0)
      std::fprintf(stderr, "[lpurt] import: %s: %s, %lld layers, %s in %lld file(s) (%s)\n", directory.c_str(),
                   chip::architecture_name(cfg.architecture), static_cast<long long>(cfg.n_layers),
                   chip::format_bytes(static_cast<double>(checkpoint->tensor_bytes())).c_str(),
                   static_cast<long long>(checkpoint->n_files()), checkpoint->dtypes().c_str());
    check_space(out, cfg, "the model of " + directory, "import", "free space or choose another folder", rank);
    std::function<void(int64_t, int64_t)> progress;
    if (rank == 0 && cfg.weight_bytes() >= progress_min_bytes) progress = WriteProgress(cfg, "import");
    const auto t0 = std::chrono::steady_clock::now();
    io::import_checkpoint(*checkpoint, out, force, progress);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("imported %s: %s, %lld parameters, %s of checkpoint -> %s in %.2f s (%.0f MB/s)\n", out.c_str(),
                chip::architecture_name(cfg.architecture), static_cast<long long>(cfg.n_parameters()),
                chip::format_bytes(static_cast<double>(checkpoint->tensor_bytes())).c_str(),
                chip::format_bytes(static_cast<double>(cfg.weight_bytes())).c_str(), s,
                static_cast<double>(checkpoint->tensor_bytes()) / 1e6 / std::max(s, 1e-9));
    return 0;
  }
};

struct CheckModelCommand {
  CLI::App* cmd;
  std::string path;

  explicit CheckModelCommand(CLI::App& app)
      : cmd(app.add_subcommand("check-model", "open and validate a model file, print its configuration")) {
    cmd->add_option("file", path, "HDF5 model file")->required();
  }

  int run() const { return check_model_command(path); }
};

struct PlanCommand {
  CLI::App* cmd;
  LayoutOptions layout;
  SystemOptions system;
  LengthOptions lengths;

  explicit PlanCommand(CLI::App& app)
      : cmd(app.add_subcommand("plan", "print the layout, SRAM use and modelled times")) {
    layout.add_to(cmd);
    system.add_to(cmd);
    lengths.add_to(cmd, "prompt length for the modelled times", "output tokens for the modelled times");
  }

  int run() {
    auto source = layout.open_model();
    int64_t prompt_len = lengths.prompt_len, tokens = lengths.tokens;
    // Defaults shrink to fit a short context; explicit values must fit.
    const int64_t context = layout.request.context > 0 ? layout.request.context : source->config().max_seq_len;
    if (lengths.prompt_len_option->count() == 0) prompt_len = std::min(prompt_len, std::max<int64_t>(1, context / 2));
    if (lengths.tokens_option->count() == 0) tokens = std::max<int64_t>(1, std::min(tokens, context - prompt_len + 1));
    // Each length alone first: CLI11 saturates a huge value at INT64_MAX, and the sum must not overflow.
    const bool each_fits = prompt_len <= context && tokens <= context;
    if (prompt_len < 1 || tokens < 1 || !each_fits || prompt_len + tokens - 1 > context)
      throw Error("--prompt-len " + std::to_string(prompt_len) + " and --tokens " + std::to_string(tokens) + " need " +
                      (each_fits ? std::to_string(prompt_len + tokens - 1) : "more than " + std::to_string(context)) +
                      " KV positions; the context is " +
                      std::to_string(context) + " (see --context)",
                  ExitCode::usage);
    layout.request.prompt_tokens = prompt_len;
    layout.request.output_tokens = tokens;
    const partition::PlanChoice choice = partition::choose_plan(source->config(), system.resolve(), layout.request);
    if (layout.json) {
      io::Record r =
          runtime::plan_summary(choice.plan, partition::modelled_times(choice, prompt_len, tokens), prompt_len, tokens);
      r.set("model", source->name()).set("system", choice.plan.hardware.name);
      std::printf("%s\n", r.to_json().c_str());
    } else {
      print_plan_table(choice, source->name(), prompt_len, tokens);
    }
    return 0;
  }
};

struct RunCommand {
  CLI::App* cmd;
  LayoutOptions layout;
  SystemOptions system;
  LengthOptions lengths;
  std::string prompt_ids, prompt_text, tokenizer_path, result_path, trace_path;
  CLI::Option *prompt_option = nullptr, *prompt_text_option = nullptr;
  runtime::FaultOptions faults;
  std::vector<std::string> link_fault_specs;
  bool timing_only = false, force = false;
  CLI::Option *stall_option = nullptr, *crash_option = nullptr, *mpi_error_option = nullptr;

  explicit RunCommand(CLI::App& app)
      : cmd(app.add_subcommand("run", "run the model on simulated chips over MPI ranks")) {
    layout.add_to(cmd);
    system.add_to(cmd);
    prompt_option = cmd->add_option("--prompt", prompt_ids, "prompt token ids, e.g. 1,2,3");
    prompt_text_option = cmd->add_option("--prompt-text", prompt_text,
                                         "prompt as text, encoded by the tokenizer (every sequence of a batch gets it)")
                             ->excludes(prompt_option);
    cmd->add_option("--tokenizer", tokenizer_path,
                    "SentencePiece model (tokenizer.model) to encode --prompt-text and decode the output with "
                    "(default: the one embedded in the model file, if any)");
    lengths.add_to(cmd, "synthetic prompt of N tokens", "tokens to generate");
    lengths.prompt_len_option->excludes(prompt_option)->excludes(prompt_text_option);
    cmd->add_option("--out", result_path, "result HDF5 file");
    cmd->add_option("--trace", trace_path, "Chrome-trace JSON of the modelled timeline (Perfetto)");
    cmd->add_option("--step-timeout", faults.step_timeout_s,
                    "seconds a chip may wait for a transfer before the job fails naming it (0: wait forever; at "
                    "most a week)")
        ->capture_default_str();
    stall_option =
        cmd->add_option("--inject-stall-rank", faults.stall_rank, "fault injection: this rank stops participating");
    crash_option = cmd->add_option("--inject-crash-rank", faults.crash_rank, "fault injection: this rank dies (SIGKILL)");
    mpi_error_option = cmd->add_option("--inject-mpi-error", faults.mpi_error_rank,
                                       "fault injection: this rank makes an MPI call that fails (a send of -1 bytes)");
    cmd->add_option("--inject-link-errors", faults.link_error_rate,
                    "fault injection: probability that a transfer arrives corrupted (checksums detect it, the "
                    "token is replayed)");
    cmd->add_option("--inject-link-fault", link_fault_specs,
                    "fault injection: FROM-TO@CALL corrupts every transfer from chip FROM to chip TO in forward "
                    "call CALL once (one sequence: 0 is the prefill, k decode step k; a batch of B counts B calls "
                    "per step); repeatable");
    cmd->add_option("--seed", faults.link_error_seed, "seed of the injected link errors")->capture_default_str();
    cmd->add_option("--max-replays", faults.max_replays,
                    "replays of one token before a link fault is fatal (0 .. " +
                        std::to_string(runtime::max_replays_limit) + ")")
        ->capture_default_str();
    cmd->add_flag("--timing-only", timing_only,
                  "same plan, schedule and message pattern without weights or payload (a --config-only file suffices)");
    cmd->add_flag("--force", force, "replace an existing result file");
  }

  int run(int rank, int n_ranks) {
    // Setup on every rank (any failure is agreed on and printed once), then the steady state.
    std::unique_ptr<io::WeightSource> source;
    std::unique_ptr<runtime::RunSession> session;
    std::unique_ptr<io::ResultWriter> result_file;  // rank 0, with --out
    chip::ChipSpec hardware;
    runtime::RunConfig config;
    runtime::agree_on_setup(MPI_COMM_WORLD, [&] {
      check_faults(n_ranks);
      source = layout.open_model();
      hardware = system.resolve();
      check_lengths(source->config(), hardware);
      config.request = layout.request;
      config.tokenizer = load_tokenizer(*source);
      if (prompt_text_option->count() > 0)
        config.prompts = text_prompts(*config.tokenizer, prompt_text, layout.request.batch);
      else
        config.prompts = make_prompts(prompt_option->count() > 0, prompt_ids, lengths.prompt_len, layout.request.batch,
                                      source->config().vocab_size);
      config.request.prompt_tokens = static_cast<int64_t>(config.prompts.front().size());
      config.request.output_tokens = lengths.tokens;
      config.n_tokens = lengths.tokens;
      config.n_ranks = n_ranks;
      config.trace_path = trace_path;
      config.force = force;
      config.timing_only = timing_only;
      config.faults = faults;
      for (const auto& spec : link_fault_specs) config.faults.link_faults.push_back(parse_link_fault(spec));
      // Rank 0 writes the outputs, so rank 0 alone checks them (another rank could see its finished file).
      if (rank == 0 && !trace_path.empty()) io::check_writable(trace_path, force);
      if (rank == 0 && !result_path.empty()) io::check_writable(result_path, force);  // before the weights load
    });
    // Apart: the session's setup is collective, so every rank must enter it, or none.
    runtime::agree_on_setup(MPI_COMM_WORLD, [&] {
      const int64_t batch = static_cast<int64_t>(config.prompts.size());
      session = std::make_unique<runtime::RunSession>(*source, hardware, config, MPI_COMM_WORLD);
      if (rank == 0 && !result_path.empty())
        result_file = std::make_unique<io::ResultWriter>(result_path, force, batch, timing_only ? 0 : lengths.tokens,
                                                         source->config().vocab_size);
    });
    runtime::LogitsSink logits;
    if (result_file)
      logits = [&](int64_t sequence, int64_t token, const float* row) { result_file->write_logits(sequence, token, row); };
    io::RunResult result = session->run(progress_printer("tokens", rank), logits);
    if (result_file) result_file->commit(result);
    if (rank != 0) return 0;
    if (layout.json) {
      std::printf("%s\n", io::run_json(result).c_str());
      return 0;
    }
    print_run(result, n_ranks);
    return 0;
  }

  /// The run's tokenizer: --tokenizer, else the model file's own, else none (null), which --prompt-text
  /// refuses. Every id it can produce must be a row of the model.
  std::shared_ptr<const io::Tokenizer> load_tokenizer(const io::WeightSource& source) const {
    std::optional<io::Tokenizer> tokenizer;
    if (!tokenizer_path.empty())
      tokenizer = io::Tokenizer::from_file(tokenizer_path);
    else if (!layout.model.empty())
      tokenizer = io::read_embedded_tokenizer(layout.model);
    if (!tokenizer) {
      if (prompt_text_option->count() == 0) return nullptr;
      throw Error("--prompt-text needs a tokenizer, and " +
                      (layout.model.empty() ? std::string("the built-in default model has none")
                                            : layout.model + " has none (no " + io::tokenizer_dataset + ")") +
                      ": give --tokenizer FILE.model, or embed one (gen-model --tokenizer, or lpurt import of a "
                      "checkpoint with a tokenizer.model)",
                  ExitCode::usage);
    }
    tokenizer->check_fits(source.config().vocab_size, source.name());
    return std::make_shared<const io::Tokenizer>(std::move(*tokenizer));
  }

  /// --prompt-text encoded, the same prompt for every sequence of the batch (greedy decoding then gives
  /// every sequence the same tokens: a batch of one text measures batched serving, as --prompt 1,2,3 does).
  static std::vector<std::vector<int32_t>> text_prompts(const io::Tokenizer& tokenizer, const std::string& text,
                                                        int64_t batch) {
    std::vector<int32_t> ids = tokenizer.encode(text);
    if (ids.empty())
      throw Error("--prompt-text \"" + text + "\" encodes to no tokens (" + tokenizer.source() +
                      " defines no BOS); give some text",
                  ExitCode::usage);
    return std::vector<std::vector<int32_t>>(static_cast<std::size_t>(batch), ids);
  }

  /// Every fault value in range, before any work: a step timeout that is a number of seconds (NaN or a
  /// negative one would wait forever), a replay bound, and injection ranks that exist.
  void check_faults(int n_ranks) const {
    const double timeout = faults.step_timeout_s;
    check_step_timeout(timeout);
    if (faults.max_replays < 0 || faults.max_replays > runtime::max_replays_limit)
      throw Error("--max-replays must be 0 .. " + std::to_string(runtime::max_replays_limit) + " (got " +
                      std::to_string(faults.max_replays) + ")",
                  ExitCode::usage);
    if (!(faults.link_error_rate >= 0 && faults.link_error_rate <= 1))
      throw Error("--inject-link-errors must be a probability in [0, 1] (got " + format_number(faults.link_error_rate) +
                      ")",
                  ExitCode::usage);
    for (const auto& [option, rank] : {std::pair{stall_option, faults.stall_rank}, std::pair{crash_option, faults.crash_rank},
                                       std::pair{mpi_error_option, faults.mpi_error_rank}})
      if (option->count() > 0 && (rank < 0 || rank >= n_ranks))
        throw Error(option->get_name() + " " + std::to_string(rank) + ": no such rank (the job has ranks 0 .. " +
                        std::to_string(n_ranks - 1) + ")",
                    ExitCode::usage);
    // A stalled rank is only noticed by a peer that times out waiting for it.
    if (stall_option->count() > 0 && (n_ranks < 2 || timeout == 0))
      throw Error("--inject-stall-rank needs at least 2 ranks and a --step-timeout above 0 (got " +
                      std::to_string(n_ranks) + " rank(s), --step-timeout " + format_number(timeout) +
                      "): otherwise nothing notices the stall and the job waits forever",
                  ExitCode::usage);
  }

  /// The request's limits and the lengths, before one prompt per sequence is built: the same messages
  /// plan and the run's own prompt check give. Each length is checked alone first: CLI11 saturates a
  /// huge value at INT64_MAX, and their sum must not overflow.
  void check_lengths(const chip::ModelConfig& cfg, const chip::ChipSpec& hardware) const {
    partition::check_request(cfg, hardware, layout.request);
    const int64_t context = layout.request.context > 0 ? layout.request.context : cfg.max_seq_len;
    const int64_t prompt_len = lengths.prompt_len, tokens = lengths.tokens;
    if (tokens > context)
      throw chip::CapacityError("--tokens " + std::to_string(tokens) + " exceeds the context of " +
                                std::to_string(context) + " positions (see --context and max_seq_len)");
    const bool synthetic_prompt = prompt_option->count() == 0 && prompt_text_option->count() == 0;
    if (synthetic_prompt && prompt_len >= 1 && tokens >= 1 &&
        (prompt_len > context || prompt_len + tokens - 1 > context))
      throw chip::CapacityError("prompt (" + std::to_string(prompt_len) + ") + tokens (" + std::to_string(tokens) +
                                ") - 1 exceeds the context of " + std::to_string(context) +
                                " positions (see --context and max_seq_len)");
  }

  void print_run(const io::RunResult& result, int n_ranks) const {
    auto get = [&](const char* k) { return *result.summary.find(k); };
    const int64_t tp = std::get<int64_t>(get("tp")), pp = std::get<int64_t>(get("pp"));
    const int64_t replicas = std::get<int64_t>(get("replicas"));
    std::printf("lpurt run: %s on %s, %d rank(s)\n", std::get<std::string>(get("model")).c_str(),
                layout_text(std::get<int64_t>(get("chips")), tp, pp, replicas, result.batch).c_str(), n_ranks);
    std::printf("prompt    %lld sequence(s) of %zu tokens\ngenerated", static_cast<long long>(result.batch),
                result.prompt.size() / static_cast<std::size_t>(result.batch));
    if (timing_only) std::printf(" (timing-only: no payload, no tokens)");
    for (std::size_t i = 0; i < result.tokens.size() && i < 32; ++i) std::printf(" %d", result.tokens[i]);
    std::printf("%s\n", result.tokens.size() > 32 ? " ..." : "");
    // The decoded text in full, one line per sequence (the first 8 of a batch; all are in --json and --out).
    const std::size_t shown_texts = std::min<std::size_t>(result.texts.size(), 8);
    for (std::size_t b = 0; b < shown_texts; ++b)
      std::printf("%-9s %s\n", result.texts.size() == 1 ? "text" : ("text[" + std::to_string(b) + "]").c_str(),
                  result.texts[b].c_str());
    if (result.texts.size() > shown_texts)
      std::printf("          ... %zu more sequence(s)\n", result.texts.size() - shown_texts);
    std::printf("modelled  time to first token %s, per output token %s, %.1f tokens/s per user, SRAM max %s\n",
                format_seconds(std::get<double>(get("ttft_s"))).c_str(),
                format_seconds(std::get<double>(get("tpot_s"))).c_str(), std::get<double>(get("tokens_per_s_user")),
                chip::format_bytes(static_cast<double>(std::get<int64_t>(get("sram_bytes_max")))).c_str());
    std::printf("host      wall %s (setup %s, prefill %s, decode %s)\n",
                format_seconds(std::get<double>(get("host_wall_s"))).c_str(),
                format_seconds(std::get<double>(get("host_setup_s"))).c_str(),
                format_seconds(std::get<double>(get("host_prefill_s"))).c_str(),
                format_seconds(std::get<double>(get("host_decode_s"))).c_str());
    if (!result_path.empty()) std::printf("result    %s\n", result_path.c_str());
  }
};

struct SweepCommand {
  CLI::App* cmd;
  CLI::Option_group* study_flags = nullptr;
  CLI::Option* chips_option = nullptr;
  /// The fixed run values a study takes only when given: {run parameter name, option, value}.
  std::vector<std::tuple<const char*, CLI::Option*, const int64_t*>> run_flags;
  std::string job_path, name = "sweep", out, model, preset, system = "groq-lpu-v1";
  std::vector<std::string> axes, set, serve, sbatch_args;
  partition::PlanRequest request;
  LengthOptions lengths;
  int64_t ranks = 0, throttle = 0;
  uint64_t seed = 1;
  double step_timeout_s = 60;
  bool functional = false, collect_only = false, slurm = false;
  SweepOptions options;

  explicit SweepCommand(CLI::App& app)
      : cmd(app.add_subcommand("sweep", "run a scaling study: every point of a job file (or of flags), "
                                        "resumably, then a table and plots")) {
    cmd->add_option("job", job_path, "TOML job file (see docs/STUDIES.md); without one, the flags below");
    study_flags = cmd->add_option_group("study", "a study without a job file");
    study_flags->add_option("--name", name, "study name")->capture_default_str();
    study_flags->add_option("--out", out, "output folder (default: ./NAME)");
    auto* model_flag = study_flags->add_option("--model", model, "HDF5 model file");
    study_flags->add_option("--preset", preset, "model preset with synthetic weights")->excludes(model_flag);
    study_flags->add_option("--seed", seed, "weight seed of --preset")->capture_default_str();
    study_flags->add_option("--system", system, "system preset or file")->capture_default_str();
    study_flags->add_option("--set", set, "fixed hardware parameter, name=value")->take_all();
    study_flags->add_option("--serve", serve,
                            "fixed serving parameter, name=value: a serving study (rate=R and requests=K, or "
                            "workload=FILE; policy, slots, ...)")
        ->take_all();
    study_flags->add_option("--sweep", axes,
                            "swept parameter: name=v1,v2,... or name=from..to*times or name=from..to+step "
                            "(run or hardware parameter; repeat for a grid)")
        ->take_all();
    chips_option = study_flags->add_option("--chips", request.n_chips, "chips (fixed)");
    auto fixed = [&](const char* field, const char* flag, int64_t& value, const char* help) {
      run_flags.emplace_back(field, study_flags->add_option(flag, value, help), &value);
      return std::get<1>(run_flags.back());
    };
    fixed("tp", "--tp", request.tp, "tensor-parallel chips per stage (fixed; default: planner's choice)");
    fixed("pp", "--pp", request.pp, "pipeline stages (fixed; default: planner's choice)");
    fixed("replicas", "--replicas", request.replicas, "pipeline replicas (fixed; default: planner's choice)");
    fixed("batch", "--batch", request.batch, "sequences (fixed)");
    fixed("context", "--context", request.context, "KV positions per sequence (fixed; default: max_seq_len)");
    fixed("block_tokens", "--block-tokens", request.block_tokens, "prefill chunk (fixed)");
    lengths.prompt_len_option =
        fixed("prompt_len", "--prompt-len", lengths.prompt_len, "synthetic prompt length")->capture_default_str();
    lengths.tokens_option = fixed("tokens", "--tokens", lengths.tokens, "tokens to generate")->capture_default_str();
    study_flags->add_flag("--functional", functional, "compute the model's outputs (default: timing-only)");
    study_flags->add_option("--ranks", ranks, "MPI ranks per point (default: the ranks sweep runs on)");
    study_flags->add_option("--throttle", throttle, "Slurm: at most this many points at once");
    study_flags->add_option("--step-timeout", step_timeout_s, "seconds a chip may wait for a transfer")
        ->capture_default_str();
    auto* point_opt = cmd->add_option("--point", options.only_point,
                                      "run this point only and do not collect (what a Slurm array element does)");
    auto* collect_flag = cmd->add_flag("--collect", collect_only, "only build the table and plots from the results");
    cmd->add_flag("--slurm", slurm, "submit the study to Slurm (job array + collect job) instead of running it")
        ->excludes(point_opt)
        ->excludes(collect_flag);
    point_opt->excludes(collect_flag);
    cmd->add_option("--sbatch", sbatch_args, "extra sbatch option for every submitted job, e.g. --sbatch=--partition=x");
    cmd->add_flag("--force", options.force, "rerun points that already have a result");
  }

  /// The study the flags describe (no job file).
  Study study_from_flags(int n_ranks) const {
    check_study_name(name, "--name");
    Study study;
    study.name = name;
    study.source = "command line";
    study.output_dir = std::filesystem::absolute(out.empty() ? name : out).lexically_normal().string();
    study.timing_only = !functional;
    study.ranks = ranks > 0 ? ranks : n_ranks;
    study.throttle = throttle;
    check_step_timeout(step_timeout_s);
    study.step_timeout_s = step_timeout_s;
    if (!model.empty()) study.model_file = std::filesystem::absolute(model).lexically_normal().string();
    else if (!preset.empty()) study.model_preset = preset;
    else throw Error("lpurt sweep needs a job file, or --model FILE or --preset NAME", ExitCode::usage);
    if (!study.model_preset.empty()) {
      chip::model_preset(study.model_preset);  // throws naming the presets
      if (seed > static_cast<uint64_t>(INT64_MAX))
        throw Error("--seed must be at most " + std::to_string(INT64_MAX), ExitCode::usage);
      study.seed = seed;
    }
    study.system = chip::is_hardware_preset(system) ? system : std::filesystem::absolute(system).lexically_normal().string();
    for (const auto& a : set) {
      const Axis one = parse_axis_flag(a);
      if (one.values.size() != 1) throw Error("--set " + a + ": one value expected (use --sweep for several)", ExitCode::usage);
      study.system_set.emplace_back(one.name, one.values.front());
    }
    for (const auto& a : serve) {
      const Axis one = parse_axis_flag(a);
      if (one.values.size() != 1) throw Error("--serve " + a + ": one value expected (use --sweep for several)", ExitCode::usage);
      if (!is_serve_parameter(one.name))
        throw Error("--serve " + a + ": " + one.name + " is not a serving parameter (see lpurt serve --help)", ExitCode::usage);
      const io::Record::Value& value = one.values.front();
      study.serve.set(one.name, one.name == "workload" ? io::Record::Value(std::filesystem::absolute(format_value(value)).lexically_normal().string())
                                                       : value);
      study.serving = true;
    }
    for (const auto& a : axes) study.axes.push_back(parse_axis_flag(a));
    const bool chips_swept = std::any_of(study.axes.begin(), study.axes.end(), [](const Axis& x) { return x.name == "chips"; });
    if (chips_swept && chips_option->count() > 0)
      throw Error("--chips and --sweep chips=...: give the chip count in one place", ExitCode::usage);
    if (!chips_swept) study.run.set("chips", request.n_chips);
    // Given values only, as a job file's [run] (expand checks each, e.g. at least 1); left out, the
    // planner's or the default choice.
    for (const auto& [field, option, value] : run_flags)
      if (option->count() > 0) study.run.set(field, *value);
    check_axes(study);
    return study;
  }

  int run(int rank, int n_ranks) const {
    Study study;
    if (!job_path.empty()) {
      if (study_flags->count_all() > 0)
        throw Error("give either a job file or study flags (" + job_path + " and flags were both given)", ExitCode::usage);
      study = load_study(job_path);
    } else {
      study = study_from_flags(n_ranks);
    }
    const std::vector<Point> points = expand(study);
    if (slurm) {
      SlurmOptions slurm_options;
      slurm_options.lpurt_binary = std::filesystem::read_symlink("/proc/self/exe").string();
      const char* dir = std::getenv("LPURT_SLURM_DIR");
      slurm_options.scripts_dir = dir ? dir : LPURT_SLURM_DIR;
      slurm_options.sbatch_args = sbatch_args;
      submit_to_slurm(study, points, slurm_options);
      return 0;
    }
    if (!collect_only) {
      if (rank == 0) write_study_job(study);
      run_points(study, points, options, MPI_COMM_WORLD);
      if (options.only_point >= 0) return 0;
      LPURT_MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
    }
    if (rank == 0) collect(study, points);
    return 0;
  }
};


/// What a fitted value means physically, for the report.
std::string parameter_reading(const std::string& name, double value, const chip::ChipSpec& spec) {
  if (name != "weight_bytes_per_cycle") return name + " = " + format_number(value);
  char text[256];
  std::snprintf(text, sizeof text,
                "weights reach the MXM at %.0f B per cycle = %.2f TB/s at %.0f MHz: %.0f%% of the %lld B/cycle "
                "stream rate, %.1fx the 4 x 320 B/cycle install rate",
                value, value * spec.clock_hz / 1e12, spec.clock_hz / 1e6,
                100 * value / static_cast<double>(spec.stream_bytes_per_cycle),
                static_cast<long long>(spec.stream_bytes_per_cycle), value / (4 * 320));
  return text;
}

struct CalibrateCommand {
  CLI::App* cmd;
  std::string published = "docs/published.toml";
  SystemOptions system;
  std::string out;
  bool check = false, json = false, force = false;

  explicit CalibrateCommand(CLI::App& app)
      : cmd(app.add_subcommand("calibrate", "fit the declared uncertain hardware constants to published figures")) {
    cmd->add_option("--published", published, "published figures (TOML [[figure]] tables)")->capture_default_str();
    system.system = "groq-lpu-v1-datasheet";
    system.add_to(cmd);
    cmd->add_option("--out", out, "write the fitted system as a system file (for --system)");
    cmd->add_flag("--force", force, "replace an existing --out file");
    cmd->add_flag("--check", check,
                  "exit 1 if a figure's groq-lpu-v1 prediction leaves its band, or groq-lpu-v1 no longer equals the fit");
    cmd->add_flag("--json", json, "print one JSON object");
  }

  int run() const {
    const auto figures = load_published_figures(published);
    const chip::ChipSpec base = system.resolve();
    int64_t n_fit = 0;
    for (const auto& f : figures) n_fit += f.fit ? 1 : 0;
    std::fprintf(stderr, "[lpurt] calibrate: %lld of %zu figure(s) of %s to fit, from %s\n",
                 static_cast<long long>(n_fit), figures.size(), published.c_str(), base.name.c_str());
    const Calibration c = calibrate(figures, base, [](const std::string& name, double value, double cost) {
      std::fprintf(stderr, "[lpurt] calibrate: %s = %s: sum of squared log residuals %.5f\n", name.c_str(),
                   format_number(value).c_str(), cost);
    });
    // What users get: the default preset, checked against every band.
    const chip::ChipSpec preset = chip::hardware_preset("groq-lpu-v1");
    std::vector<double> preset_predictions;
    for (const auto& r : c.figures) preset_predictions.push_back(predict_figure(r.figure, preset));
    if (json) {
      nlohmann::json j;
      j["published"] = published;
      j["base_system"] = base.name;
      j["evaluations"] = c.evaluations;
      for (const auto& p : c.parameters)
        j["parameters"].push_back({{"name", p.declared.name}, {"min", p.declared.min_value}, {"max", p.declared.max_value},
                                   {"base", p.start_value}, {"fitted", p.fitted_value},
                                   {"preset", chip::get_parameter(preset, p.declared.name)},
                                   {"reading", parameter_reading(p.declared.name, p.fitted_value, base)},
                                   {"bracket_source", p.declared.bracket_source}});
      for (std::size_t i = 0; i < c.figures.size(); ++i) {
        const FigureResult& r = c.figures[i];
        j["figures"].push_back({{"name", r.figure.name}, {"metric", r.figure.metric}, {"published", r.figure.published},
                                {"published_low", r.figure.published_low}, {"published_high", r.figure.published_high},
                                {"base", r.base_prediction}, {"fitted", r.fitted_prediction},
                                {"preset", preset_predictions[i]}, {"error", r.error()}, {"band", r.figure.band},
                                {"in_band", r.in_band()}, {"fit", r.figure.fit}, {"source", r.figure.source}});
      }
      std::printf("%s\n", j.dump().c_str());
    } else {
      for (const auto& p : c.parameters)
        std::printf("fitted  %s = %s (bracket %s .. %s, %s had %s): %s\n", p.declared.name.c_str(),
                    format_number(p.fitted_value).c_str(), format_number(p.declared.min_value).c_str(),
                    format_number(p.declared.max_value).c_str(), base.name.c_str(),
                    format_number(p.start_value).c_str(),
                    parameter_reading(p.declared.name, p.fitted_value, base).c_str());
      std::printf("%-40s %-20s %-18s %12s %12s %8s %6s %s\n", "figure", "metric", "published", base.name.c_str(),
                  "calibrated", "error", "band", "use");
      for (const auto& r : c.figures) {
        char range[64];
        std::snprintf(range, sizeof range, r.figure.published_low < r.figure.published_high ? "%.4g (%.4g..%.4g)" : "%.4g",
                      r.figure.published, r.figure.published_low, r.figure.published_high);
        std::printf("%-40s %-20s %-18s %12.4g %12.4g %+7.1f%% %5.0f%% %s\n", r.figure.name.c_str(),
                    r.figure.metric.c_str(), range, r.base_prediction, r.fitted_prediction, 100 * r.error(),
                    100 * r.figure.band, r.figure.fit ? "fit" : "held back");
      }
      std::printf("%lld predictions in the fit\n", static_cast<long long>(c.evaluations));
    }
    if (!out.empty()) {
      std::string text = "# Fitted by `lpurt calibrate --published " + published + "`; every other value is " +
                         base.name + "'s.\npreset = \"" + base.name + "\"\n";
      for (const auto& p : c.parameters) text += p.declared.name + " = " + format_number(p.fitted_value) + "\n";
      io::write_text_atomically(out, text, force);
    }
    if (!check) return 0;
    bool ok = true;
    for (std::size_t i = 0; i < c.figures.size(); ++i) {
      const FigureResult& r = c.figures[i];
      const double error = preset_predictions[i] / r.figure.published - 1;
      if (std::abs(error) <= r.figure.band) continue;
      std::fprintf(stderr, "[lpurt] calibrate --check: %s (%s): groq-lpu-v1 predicts %.4g, %+.1f%% from the published "
                   "%.4g, outside its band of %.0f%%\n", r.figure.name.c_str(), r.figure.origin.c_str(),
                   preset_predictions[i], 100 * error, r.figure.published, 100 * r.figure.band);
      ok = false;
    }
    for (const auto& p : c.parameters) {
      const double in_preset = chip::get_parameter(preset, p.declared.name);
      // The fit moves by a unit or two when an unrelated change shifts a cycle count; 1% is a real drift.
      if (std::abs(in_preset / p.fitted_value - 1) <= 0.01) continue;
      std::fprintf(stderr, "[lpurt] calibrate --check: groq-lpu-v1 has %s = %s but the fit gives %s: update "
                   "chip/hardware.hpp and rerun scripts/validate.sh\n", p.declared.name.c_str(),
                   format_number(in_preset).c_str(), format_number(p.fitted_value).c_str());
      ok = false;
    }
    return ok ? 0 : 1;
  }
};

}  // namespace

/// SHIP's 64-chip AllReduce (lpu-v1-facts §2.4: 50% of bandwidth at 32 KiB, 90% at 80 KiB), in lpurt's
/// own collective model: the standalone program of the chosen algorithm and its timeline.
struct AllReduceCommand {
  CLI::App* cmd;
  SystemOptions system;
  int64_t chips = 64;
  std::vector<int64_t> sizes{32 * 1024, 80 * 1024};
  bool json = false;

  explicit AllReduceCommand(CLI::App& app)
      : cmd(app.add_subcommand("allreduce", "model a standalone all-reduce over the first N chips of the system")) {
    system.add_to(cmd);
    cmd->add_option("--chips", chips, "chips of the group (and of the system: whole nodes of 8)")->capture_default_str();
    cmd->add_option("--bytes", sizes, "message sizes in bytes (each member's array on the links)")->delimiter(',');
    cmd->add_flag("--json", json, "print one JSON object");
  }

  int run() const {
    const chip::ChipSpec hw = system.resolve();
    if (chips < 2) throw Error("--chips must be at least 2 (got " + std::to_string(chips) + ")", ExitCode::usage);
    const partition::Topology topology(partition::parse_topology(hw.topology), chips);
    nlohmann::json points = nlohmann::json::array();
    for (const int64_t bytes : sizes) {
      const partition::AllReducePoint p = partition::model_all_reduce(chips, bytes, topology, hw);
      points.push_back({{"bytes", p.bytes},
                        {"algorithm", partition::algorithm_name(p.algorithm)},
                        {"time_s", p.seconds},
                        {"bus_bytes_per_s", p.bus_bytes_per_s},
                        {"efficiency", p.efficiency}});
      if (!json)
        std::printf("%lld chips (%s), %lld bytes: %s, %.3f us, bus bandwidth %.1f GB/s, %.1f%% of the %lld-byte all-reduce's\n",
                    static_cast<long long>(chips), hw.topology.c_str(), static_cast<long long>(bytes),
                    partition::algorithm_name(p.algorithm), p.seconds * 1e6, p.bus_bytes_per_s / 1e9, 100 * p.efficiency,
                    static_cast<long long>(partition::all_reduce_reference_bytes));
    }
    if (json) {
      const nlohmann::json j = {{"chips", chips},
                                {"topology", hw.topology},
                                {"reference_bytes", partition::all_reduce_reference_bytes},
                                {"points", points}};
      std::printf("%s\n", j.dump().c_str());
    }
    return 0;
  }
};

int run_command_line(int argc, char** argv, int rank, int n_ranks) {
  CLI::App app{"lpurt: a transformer partitioned across simulated LPU chips on MPI ranks"};
  app.require_subcommand(1);
  GenModelCommand gen_model(app);
  ImportCommand import(app);
  CheckModelCommand check_model(app);
  PlanCommand plan(app);
  RunCommand run(app);
  SweepCommand sweep(app);
  CalibrateCommand calibrate(app);
  AllReduceCommand all_reduce(app);
  ServeCommand serve(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {  // --help
    return rank == 0 ? app.exit(e) : 0;
  } catch (const CLI::ParseError& e) {
    throw Error(std::string(e.what()) + " (see lpurt --help)", ExitCode::usage);
  }
  if (gen_model.cmd->parsed()) return gen_model.run(rank);
  if (import.cmd->parsed()) return import.run(rank);
  if (check_model.cmd->parsed()) return check_model.run();
  if (plan.cmd->parsed()) return plan.run();
  if (sweep.cmd->parsed()) return sweep.run(rank, n_ranks);
  if (calibrate.cmd->parsed()) return rank == 0 ? calibrate.run() : 0;
  if (all_reduce.cmd->parsed()) return rank == 0 ? all_reduce.run() : 0;
  if (serve.parsed()) return serve.run(rank, n_ranks);
  return run.run(rank, n_ranks);
}

}  // namespace lpurt::jobs
