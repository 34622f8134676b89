// TaskGraph: the discrete-event core of the simulator. A task has a
// duration, the tasks it depends on, and the resources it occupies (a rank's
// compute stream, its communication lane, a shared NIC). Each resource runs
// one task at a time. An ordered resource runs its tasks in the order they
// were added, like a CUDA stream or a communicator's collective lane: DDP's
// in-order bucket launches and FSDP's prefetch come from that rule. An
// unordered one serves whichever waiting task became ready first, like a
// server's NIC taking the pushes of many workers as they arrive (incast). A
// task that spans several resources (a collective over the communication
// lanes of its ranks) starts when all of them are free for it and its
// dependencies are done.
//
// run() is event-driven (a min-heap of completion times; ties go to the
// lower task id, so results are deterministic) and costs O(T log T) for T
// tasks when unordered resources rarely hold more than a few waiting tasks.
// Thread-compatible; nothing collective.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tandem::sim {

class TaskGraph {
 public:
  using TaskId = int;
  using ResourceId = int;

  // `group` names the simulated rank (or rank class) for traces; `lane` is
  // the row inside it ("compute", "comm", "nic").
  ResourceId add_resource(std::string group, std::string lane, bool ordered = true);

  // Adds a task of `duration_s` (>= 0) on `resources` (at least one) after
  // `deps` (tasks added earlier). Throws InvalidArgument otherwise.
  TaskId add_task(std::string name, double duration_s, std::vector<ResourceId> resources,
                  std::vector<TaskId> deps = {});

  struct Timing {
    double start_s = 0;
    double end_s = 0;
  };
  // Makes `task` wait for `dep` as well (either may be added later than the
  // other; run() refuses cycles).
  void add_dependency(TaskId task, TaskId dep);

  // Schedules every task. Throws InternalError if the resource orders
  // contradict the dependencies (a task waits on one that can never start).
  std::vector<Timing> run() const;

  int tasks() const { return static_cast<int>(tasks_.size()); }
  const std::string& task_name(TaskId id) const { return tasks_[id].name; }
  const std::vector<ResourceId>& task_resources(TaskId id) const { return tasks_[id].resources; }
  const std::string& resource_group(ResourceId id) const { return resources_[id].group; }
  const std::string& resource_lane(ResourceId id) const { return resources_[id].lane; }
  int resources() const { return static_cast<int>(resources_.size()); }

 private:
  struct Task {
    std::string name;
    double duration_s;
    std::vector<ResourceId> resources;
    std::vector<TaskId> deps;
  };
  struct Resource {
    std::string group;
    std::string lane;
    bool ordered = true;
    std::vector<TaskId> queue;  // in the order added
  };
  std::vector<Task> tasks_;
  std::vector<Resource> resources_;
};

// Writes `timing` of `graph` as Chrome trace-event JSON (Perfetto): one
// process per resource group, one thread per lane, one complete event per
// task and resource. Throws Error naming the path if it cannot be written.
void write_trace(const TaskGraph& graph, const std::vector<TaskGraph::Timing>& timing,
                 const std::string& path);

}  // namespace tandem::sim
