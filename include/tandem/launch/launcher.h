// The engine behind `tandem-run`: starts nproc_per_node workers on this node
// with the environment torchrun sets, relays their output line by line,
// forwards SIGINT/SIGTERM, stops the whole group when one worker fails, and
// restarts it up to max_restarts times. On node 0 it serves the job's TCP
// store for the whole run (workers get TANDEM_STORE_SERVED=1 and only
// connect), so the store outlives any worker and every restart. In an elastic
// job (LaunchOptions::elastic) a failed worker does not stop the others; it
// is replaced alone (launch/elastic_group.h). Workers run in their own process
// groups, so stopping a worker also stops the processes it started; once every
// worker has exited, processes still left in those groups are stopped too
// (SIGTERM, then SIGKILL), so a job never leaves orphans. A process that
// leaves its group (setsid) is beyond reach. Workers read stdin from
// /dev/null. With nnodes > 1 each node's launcher restarts only its own
// workers; nodes do not agree on restarts with each other yet.
//
// Not thread-safe, and one run() per process at a time: run() installs
// signal handlers and makes the calling process a child subreaper (Linux)
// for its duration. Call it from a process like tandem-run whose only
// children are the workers.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tandem/core/error.h"
#include "tandem/launch/launch_options.h"
#include "tandem/launch/program.h"

namespace tandem::launch {

struct LaunchResult {
  // What tandem-run exits with: 0 when every worker of an attempt exited 0,
  // 1 when a worker failed and no restart was left (elastic: when the job did
  // not complete), 128 + signal when
  // SIGINT/SIGTERM stopped the job (130, 143).
  int exit_code = 0;
  int attempts = 0;  // how often the group was started
  int signal = 0;    // the signal that stopped the job, or 0
};

// Runs the job described by `options` until it succeeds, fails for good or is
// stopped by SIGINT/SIGTERM. Blocks for as long as the workers run; every wait
// inside is a bounded poll. After a failure or a signal the workers get
// SIGTERM, then SIGKILL once options.grace_period has passed; run() returns
// only after every worker process has been reaped.
//
// Throws tandem::InvalidArgument for bad options, ProgramError when PROGRAM
// cannot be executed, tandem::Error when the log directory cannot be made or
// a process cannot be started, and tandem::TimeoutError when a worker does
// not die 10 s after SIGKILL (stuck in the kernel).
LaunchResult run(const LaunchOptions& options, const LaunchOutput& output);

}  // namespace tandem::launch
