// TrainSummary: what one train() call (trainer.h) measured, on each rank:
// steps, samples/s, losses, model-state bytes, and the strategies' own
// figures. A plain struct; the parameter servers' role (strategy.h) returns
// one too.
#pragma once

#include <cstdint>
#include <map>

namespace tandem::train {

struct TrainSummary {
  int64_t steps = 0;    // steps run by this call (from the resumed step, if any)
  int64_t samples = 0;  // over all ranks
  double wall_seconds = 0;
  double samples_per_second = 0;
  double first_loss = 0;
  double final_loss = 0;  // mean of the last log window, averaged over ranks
  double eval_loss = 0;
  double eval_accuracy = 0;  // fraction of correct predictions (tokens for gpt-mini)
  // This rank's model-state bytes (parameters, gradients, optimizer state),
  // as the strategy measured them at the end and at peak.
  int64_t parameter_bytes = 0;
  int64_t gradient_bytes = 0;
  int64_t optimizer_bytes = 0;
  int64_t peak_model_state_bytes = 0;
  // With track_activations: the most activation bytes in one sample (0
  // without), and the most model state plus activations in one sample.
  int64_t peak_activation_bytes = 0;
  int64_t peak_bytes_with_activations = 0;
  // state_digest() (checkpoint.h) of this rank's model after the last step:
  // equal on every rank under ddp, and equal for a resumed run and a straight
  // one exactly when their parameters and buffers are bitwise the same.
  uint64_t state_digest = 0;
  // Strategy measurements (docs/strategies.md), this rank's unless said.
  bool server = false;           // this rank served parameters and did not train
  int64_t workers = 0;           // ranks that trained
  double mean_step_seconds = 0;  // this rank's wall time per step
  double wait_seconds = 0;       // this rank's time in communication and waits
  // ps: SSP staleness -> updates; easgd: exchanges by others in between -> exchanges.
  // On a server, every update it applied; on a worker, its own.
  std::map<int64_t, int64_t> staleness_histogram;
  int64_t dropped_gradients = 0;   // ddp with backups: this rank's late gradients
  double consensus_distance = -1;  // gossip, easgd, local-sgd at the end; -1: not measured
};

}  // namespace tandem::train
