// gnuplot as a subprocess: the one way Tandem draws PNG figures (Debian's
// gnuplot-nox; nothing links a plotting library). A figure is a script and
// its data files in a scratch folder; run_gnuplot runs the script with a
// deadline. Thread-safe: plain functions (each call starts its own process).
#pragma once

#include <string>

namespace tandem::launch {

// The gnuplot to run, found in PATH. Throws tandem::Error saying that `what`
// ("simulate: --plot", "detect: plots=true") needs gnuplot and how to
// install it when there is none.
std::string find_gnuplot(const std::string& what);

// gnuplot's quoting of a string (single quotes, inner quotes doubled).
std::string gnuplot_quoted(const std::string& text);

// Runs gnuplot on the script file `script` with at most 60 s. Throws
// tandem::Error naming `what` and `output` (the figure), with gnuplot's exit
// and the tail of its output, when it fails or runs past the deadline, and
// find_gnuplot's error when it is missing.
void run_gnuplot(const std::string& script, const std::string& what, const std::string& output);

}  // namespace tandem::launch
