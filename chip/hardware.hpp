#pragma once
/// \file
/// The description of one LPU chip and of its chip-to-chip links. Every default is traceable to
/// shared/reference/lpu-v1-facts.md (section numbers in the comments, tags [P]/[S]/[D]/[U] as there).
/// Every parameter has a stable name so that a system file, the command line (`--set name=value`) and a
/// sweep can override it.
///
/// Example usage:
/// \code
///   auto hw = lpurt::chip::hardware_preset("groq-lpu-v1");
///   lpurt::chip::set_parameter(hw, "link_bytes_per_s", 28e9, "--set");
/// \endcode

#include <cstdint>
#include <algorithm>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace lpurt::chip {

/// groq-lpu-v1's weight path, as `lpurt calibrate` fits it to docs/published.toml from
/// groq-lpu-v1-datasheet (docs/VALIDATION.md shows the fit and every residual; `lpurt calibrate --check`
/// fails when this value and the fit part).
inline constexpr int64_t calibrated_weight_bytes_per_cycle = 3003;

struct ChipSpec {
  std::string name = "groq-lpu-v1";
  double clock_hz = 900e6;                 ///< §1.1: 900 MHz nominal [P ISCA20, ALCF]
  int64_t sram_bytes = 230'686'720;        ///< §1.1: 220 MiB [P ISCA22]
  /// Bytes per cycle that can stream from MEM to the MXM/VXM: 64 streams x 320 B (§1.2) = 18.4 TB/s at
  /// 900 MHz, the rate §6.1 recommends for weight streaming [D]; SHIP's 10,616 TB/s / 576 LPUs agrees [S].
  /// Operands other than weights (the KV cache, activations) move at this rate.
  int64_t stream_bytes_per_cycle = 64 * 320;
  /// The weight path: int8 weight bytes that reach the matrix units per cycle (capped by the stream rate).
  /// A declared uncertain constant (see uncertain_parameters()): the sources bracket it between the MXM's
  /// weight install, 4 planes x 320 B = 1,280 B/cycle = 1.15 TB/s [D from §1.1-1.2, U], and the stream
  /// rate above, 20,480 B/cycle = 18.4 TB/s [D §6.1]. `groq-lpu-v1-datasheet` takes the stream rate;
  /// `groq-lpu-v1` takes the value `lpurt calibrate` fits to docs/published.toml inside that bracket.
  int64_t weight_bytes_per_cycle = calibrated_weight_bytes_per_cycle;
  /// int8 multiply-accumulates per cycle: 4 planes x 320 x 320 (§1.1) = 737 TOPS at 900 MHz [D] (750 [P]).
  int64_t mxm_macs_per_cycle = 4 * 320 * 320;
  int64_t vector_ops_per_cycle = 5120;     ///< §1.1: 16 ALUs x 320 lanes [S TPU24]
  /// Fixed latency of every compute op: instructions are staggered one superlane per cycle over the
  /// 20 superlanes (§1.2) [U], so an op's last lane finishes 20 cycles after its first.
  int64_t op_latency_cycles = 20;
  int64_t vector_bytes = 320;              ///< §1.2: maxVL, the unit of every transfer [S]
  /// SRAM held back for the program (instruction streams). No public figure; one 2.5 MiB MEM slice per
  /// hemisphere (§1.2) is our assumption [U].
  int64_t program_reserve_bytes = 2 * 2'621'440;
  /// What a deployed system stores and moves, as modelled (SRAM accounting and link times), separately
  /// from the float32 the host runtime keeps for SPEC's exact numerics:
  /// bytes per stored KV-cache value: FP16, as §6.2 sizes Llama-2 70B's cache (320 KiB per token) [D].
  int64_t kv_bytes_per_value = 2;
  /// bytes per value of activation buffers and of every value on a chip-to-chip link (activations,
  /// tensor-parallel partial sums, embedding rows, expert outputs): FP16, as §6.3 sizes one activation
  /// vector [D]; INT8/FP8 (1) halves the serialization (§6.3), FP32 (4) is what the host moves.
  int64_t activation_bytes_per_value = 2;
  double link_bytes_per_s = 14e9;          ///< §1.3: 14 GB/s per link per direction (4 x 28 Gb/s cabled) [S Linley20]
  double hop_latency_ns = 300.0;           ///< §1.3: ~300 ns per LPU-to-LPU hop [S SHIP]
  /// Power of one chip, for the energy figures of `lpurt serve`: a chip draws power_active_w while its MXM or
  /// VXM computes and power_idle_w otherwise, plus power_overhead_w at all times (its share of the host,
  /// network and cooling). Defaults: 300 W, the GroqCard's maximum (§1.1 [S TechSpot20, U]); idle has no
  /// public figure, a third of the maximum is our assumption [U]; the overhead is SHIP's 388 W of
  /// provisioned system power per LPU (§1.1 [S]) less the chip's 300 W, so that a fully busy system draws
  /// exactly the provisioned power [D].
  double power_active_w = 300.0;
  double power_idle_w = 100.0;
  double power_overhead_w = 88.0;
  /// How nodes are joined: "dragonfly" (ISCA 2022, §2.2 [P]) or "chain" (SHIP QuadFour, §2.4 [S]).
  std::string topology = "dragonfly";
  /// Heterogeneity, for straggler studies: chip -> speed factor (0.5: each of its ops takes twice the
  /// cycles), set as `chip_speed_factor.17 = 0.5`. Chips not listed run at 1.
  std::map<int64_t, double> chip_speed_factors;
  /// {chip a, chip b} with a < b -> bandwidth factor of the link between them (both directions), set as
  /// `link_bandwidth_factor.3-11 = 0.25`. The chips must be neighbours in the topology.
  std::map<std::pair<int64_t, int64_t>, double> link_bandwidth_factors;

  /// Every chip and link nominal: the pipeline replicas of a plan are then identical, and one replica's
  /// program stands for all of them.
  bool uniform() const { return chip_speed_factors.empty() && link_bandwidth_factors.empty(); }
  double chip_speed(int64_t chip) const {
    const auto it = chip_speed_factors.find(chip);
    return it == chip_speed_factors.end() ? 1.0 : it->second;
  }
  double link_bandwidth(int64_t a, int64_t b) const {
    const auto it = link_bandwidth_factors.find({std::min(a, b), std::max(a, b)});
    return it == link_bandwidth_factors.end() ? 1.0 : it->second;
  }

  /// Bytes of weights reaching the MXM per cycle: the weight path, at most the stream rate.
  int64_t weight_path_bytes_per_cycle() const { return std::min(weight_bytes_per_cycle, stream_bytes_per_cycle); }
  double weight_stream_bytes_per_s() const { return static_cast<double>(weight_path_bytes_per_cycle()) * clock_hz; }
  /// Throws ConfigError naming the parameter if any value is out of its physical range.
  void validate() const;
};

/// Known hardware presets: "groq-lpu-v1" (the default, calibrated) and "groq-lpu-v1-datasheet" (every
/// value from first principles, the weight path at the stream rate).
ChipSpec hardware_preset(const std::string& name);
std::vector<std::string> hardware_preset_names();
/// Whether `name` is one of hardware_preset_names() (a system given by name rather than by file).
bool is_hardware_preset(const std::string& name);

/// One overridable parameter: its name, unit, and where its default comes from.
struct ParameterInfo {
  std::string name;
  std::string unit;
  std::string source;
  bool integral = false;  ///< takes whole numbers only (bytes, cycles, counts)
};
const std::vector<ParameterInfo>& parameter_infos();

/// A declared uncertain constant: a parameter the sources only bracket, which `lpurt calibrate` may fit
/// inside [min_value, max_value] (never outside, and never per model).
struct UncertainParameter {
  std::string name;
  double min_value = 0;
  double max_value = 0;
  std::string bracket_source;  ///< where each end of the bracket comes from
};
const std::vector<UncertainParameter>& uncertain_parameters();
/// Whether `name` names a parameter: one of parameter_infos(), `topology`, `chip_speed_factor.N` or
/// `link_bandwidth_factor.A-B`; also a removed one (see check_not_removed), so that every path that
/// sets it reaches set_parameter and its clear error rather than an "unknown parameter" one.
bool is_parameter_name(const std::string& name);
/// Throws ConfigError naming `name` if it is a parameter lpurt no longer has (`local_links`,
/// `global_links`: the topology fixes every chip's links, so they changed no modelled figure).
void check_not_removed(const std::string& name, const std::string& origin);
double get_parameter(const ChipSpec& spec, const std::string& name);
/// Sets a parameter by name; `origin` (a file and line, or "--set") goes into the error message.
void set_parameter(ChipSpec& spec, const std::string& name, double value, const std::string& origin);
/// Applies "name=value" (as given to --set); `topology=chain` sets the one string parameter.
void apply_assignment(ChipSpec& spec, const std::string& assignment, const std::string& origin);
/// Reads a system file: TOML `name = value` lines (dotted names such as `chip_speed_factor.3` bare or
/// quoted), optionally `preset = "groq-lpu-v1"` as the first setting. `file_name` goes into error
/// messages with the line. Throws InputError for TOML syntax, an unknown name or a value of the wrong
/// type; ConfigError for a value out of range.
ChipSpec parse_system_file(const std::string& text, const std::string& file_name);

}  // namespace lpurt::chip
