// The training loop behind `tandem train`: a model from the zoo, a data set
// (real files or synthetic), an optimizer with a learning-rate schedule, and
// a strategy (none: one process; ddp: DistributedDataParallel; zero1-3;
// the asynchronous ps, easgd, gossip and local-sgd), on the communicator it
// is given; options.h holds the options. One loop serves every strategy
// through the Strategy interface (strategy.h), the mesh (mesh_model.h: the
// ranks as a data x pipeline x tensor grid) included. Under ps, easgd and
// ddp with backup workers the last --servers ranks serve parameters instead
// of training. Rank 0 reports progress (a bar on a terminal, plain lines
// otherwise) and every rank can append JSON lines of metrics.
// Collective: every rank calls train() with the same options. Not
// thread-safe.
#pragma once

#include <memory>
#include <ostream>
#include <string>

#include "tandem/comm/communicator.h"
#include "tandem/comm/rendezvous.h"
#include "tandem/train/options.h"
#include "tandem/train/summary.h"

namespace tandem::train {

// Collective. Validates `options` (validate_options: InvalidArgument naming
// the flag) and trains. `out` receives rank 0's progress and summary
// (nullptr: silent). With --resume, reads the checkpoint and checks it
// against the options before any collective (CheckpointError naming the
// file and the field). Blocks until the run ends; every collective is bound
// by the communicator's timeout.
TrainSummary train(const TrainerOptions& options, const std::shared_ptr<Communicator>& comm,
                   std::ostream* out);

// An elastic run, under tandem-run --min-workers/--max-workers (TANDEM_ELASTIC
// set; docs/elastic.md): joins the job's membership through the store
// tandem-run serves, builds each generation's communicator with `init`, and
// trains as train() does, but when a worker dies or stalls the survivors
// redo the interrupted step in a new generation from the state committed in
// memory, with the same global batch and sample order (--elastic-batch), and
// a replacement joins at a step boundary. Under ps and gossip the survivors
// re-form and go on from their own state instead (no joiners; a lost server
// ends the job). Rank 0 of the last generation marks the job complete.
// Throws NotSupported for strategies it does not cover (easgd, local-sgd,
// backup workers, --mesh),
// and LeftJobError (an Error) on a worker evicted from the job.
TrainSummary train_elastic(const TrainerOptions& options, const InitOptions& init,
                           std::ostream* out);

}  // namespace tandem::train
