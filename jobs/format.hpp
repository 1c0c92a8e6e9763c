#pragma once
/// \file
/// Human-readable figures for the command line's tables and progress lines.

#include <string>

namespace lpurt::jobs {

/// "850.00 us", "1.139 ms", "3.162 s".
std::string format_seconds(double seconds);

}  // namespace lpurt::jobs
