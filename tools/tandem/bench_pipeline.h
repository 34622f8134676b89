// `tandem bench pipeline`: the pipeline's bubble, measured against the
// theory. For each stage count p, schedule (gpipe, 1f1b) and micro-batch
// count m, p ranks run a Pipeline whose stages each take a fixed time per
// micro-batch forward and backward (--work sleep: a timed wait standing for
// a device's kernels, so stages do not compete for this host's few cores;
// --work compute: real matmuls), and each stage measures 1 - compute time /
// step time. Prints a table of measured against (p-1)/(m+p-1), writes one
// JSON line per configuration and a CSV, and with --trace-dir one Chrome
// trace per rank and configuration showing the schedule (F<mb>, B<mb>).
#pragma once

namespace CLI {
class App;
}

namespace tandem::tools {

void add_bench_pipeline(CLI::App& bench, int& exit_code);

}  // namespace tandem::tools
