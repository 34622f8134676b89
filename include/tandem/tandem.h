// The umbrella header, for examples and tools: everything public in Tandem.
// Library code includes the narrow headers it needs instead.
#pragma once

#include "tandem/comm/backend.h"
#include "tandem/comm/communicator.h"
#include "tandem/comm/device_mesh.h"
#include "tandem/comm/rendezvous.h"
#include "tandem/comm/store.h"
#include "tandem/comm/work.h"
#include "tandem/core/check.h"
#include "tandem/core/deadline.h"
#include "tandem/core/env.h"
#include "tandem/core/error.h"
#include "tandem/core/log.h"
#include "tandem/parallel/bucket_plan.h"
#include "tandem/parallel/distributed_data_parallel.h"
#include "tandem/parallel/fully_sharded_data_parallel.h"
#include "tandem/parallel/sync_batch_norm.h"
#include "tandem/train/lr_schedule.h"
#include "tandem/train/trainer.h"
