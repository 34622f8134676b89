#include "tandem/sim/task_graph.h"

#include <algorithm>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <queue>
#include <set>
#include <utility>

#include "tandem/core/check.h"
#include "tandem/core/error.h"

namespace tandem::sim {

TaskGraph::ResourceId TaskGraph::add_resource(std::string group, std::string lane, bool ordered) {
  resources_.push_back({std::move(group), std::move(lane), ordered, {}});
  return static_cast<ResourceId>(resources_.size()) - 1;
}

TaskGraph::TaskId TaskGraph::add_task(std::string name, double duration_s,
                                      std::vector<ResourceId> resources,
                                      std::vector<TaskId> deps) {
  const auto id = static_cast<TaskId>(tasks_.size());
  TANDEM_CHECK(duration_s >= 0, "simulator: task '{}' has a negative duration ({} s)", name,
               duration_s);
  TANDEM_CHECK(!resources.empty(), "simulator: task '{}' runs on no resource", name);
  for (ResourceId r : resources) {
    TANDEM_CHECK(r >= 0 && r < this->resources(), "simulator: task '{}' names resource {} of {}",
                 name, r, this->resources());
  }
  for (TaskId d : deps) {
    TANDEM_CHECK(d >= 0 && d < id, "simulator: task '{}' depends on task {}, not added before it",
                 name, d);
  }
  std::sort(resources.begin(), resources.end());
  resources.erase(std::unique(resources.begin(), resources.end()), resources.end());
  for (ResourceId r : resources) resources_[r].queue.push_back(id);
  tasks_.push_back({std::move(name), duration_s, std::move(resources), std::move(deps)});
  return id;
}

void TaskGraph::add_dependency(TaskId task, TaskId dep) {
  TANDEM_CHECK(task >= 0 && task < tasks() && dep >= 0 && dep < tasks() && task != dep,
               "simulator: dependency {} -> {} names a task that does not exist ({} tasks)", dep,
               task, tasks());
  tasks_[task].deps.push_back(dep);
}

// Note [Event order]: the clock moves from one completion to the next. At
// each, the finished task frees its resources and may complete the
// dependencies of others; then every task that could have been unblocked
// (its dependents, the next task of each freed ordered resource, the waiting
// tasks of each freed unordered one, earliest ready first) starts if all its
// resources are free and, where ordered, it is their next task.
std::vector<TaskGraph::Timing> TaskGraph::run() const {
  const int n = tasks();
  std::vector<Timing> timing(n);
  std::vector<int> deps_left(n);
  std::vector<double> ready_s(n, 0.0);
  std::vector<std::vector<TaskId>> dependents(n);
  for (int t = 0; t < n; ++t) {
    deps_left[t] = static_cast<int>(tasks_[t].deps.size());
    for (TaskId d : tasks_[t].deps) dependents[d].push_back(t);
  }
  std::vector<size_t> head(resources_.size(), 0);  // ordered: index of the next task
  std::vector<char> busy(resources_.size(), 0);
  std::vector<std::set<std::pair<double, TaskId>>> waiting(resources_.size());  // unordered
  std::vector<char> started(n, 0);
  using Event = std::pair<double, TaskId>;
  std::priority_queue<Event, std::vector<Event>, std::greater<>> done;
  double now = 0;
  int finished = 0;

  auto try_start = [&](TaskId t) {
    if (started[t] || deps_left[t] > 0) return false;
    for (ResourceId r : tasks_[t].resources) {
      if (busy[r]) return false;
      const Resource& res = resources_[r];
      if (res.ordered && res.queue[head[r]] != t) return false;
    }
    started[t] = 1;
    timing[t] = {now, now + tasks_[t].duration_s};
    for (ResourceId r : tasks_[t].resources) {
      busy[r] = 1;
      if (resources_[r].ordered) {
        ++head[r];
      } else {
        waiting[r].erase({ready_s[t], t});
      }
    }
    done.push({timing[t].end_s, t});
    return true;
  };
  auto became_ready = [&](TaskId t) {
    for (ResourceId r : tasks_[t].resources) {
      if (!resources_[r].ordered) waiting[r].insert({ready_s[t], t});
    }
    try_start(t);
  };
  auto serve = [&](ResourceId r) {
    if (busy[r]) return;
    const Resource& res = resources_[r];
    if (res.ordered) {
      if (head[r] < res.queue.size()) try_start(res.queue[head[r]]);
      return;
    }
    for (auto it = waiting[r].begin(); it != waiting[r].end();) {
      const TaskId t = (it++)->second;  // try_start may erase it
      if (try_start(t)) return;
    }
  };

  for (int t = 0; t < n; ++t) {
    if (deps_left[t] == 0) became_ready(t);
  }
  while (!done.empty()) {
    const auto [end, t] = done.top();
    done.pop();
    now = end;
    ++finished;
    for (ResourceId r : tasks_[t].resources) busy[r] = 0;
    for (TaskId d : dependents[t]) {
      ready_s[d] = std::max(ready_s[d], end);
      if (--deps_left[d] == 0) became_ready(d);
    }
    for (ResourceId r : tasks_[t].resources) serve(r);
  }
  TANDEM_ASSERT(finished == n,
                "simulator: {} of {} tasks could never start (a dependency cycle, or a resource "
                "order that contradicts the dependencies), first: '{}'",
                n - finished, n,
                tasks_[std::find(started.begin(), started.end(), 0) - started.begin()].name);
  return timing;
}

void write_trace(const TaskGraph& graph, const std::vector<TaskGraph::Timing>& timing,
                 const std::string& path) {
  std::map<std::string, int> pids;
  nlohmann::json events = nlohmann::json::array();
  for (int r = 0; r < graph.resources(); ++r) {
    auto [it, fresh] = pids.emplace(graph.resource_group(r), static_cast<int>(pids.size()));
    if (fresh) {
      events.push_back({{"ph", "M"}, {"name", "process_name"}, {"pid", it->second},
                        {"args", {{"name", it->first}}}});
    }
    events.push_back({{"ph", "M"}, {"name", "thread_name"}, {"pid", it->second}, {"tid", r},
                      {"args", {{"name", graph.resource_lane(r)}}}});
  }
  for (int t = 0; t < graph.tasks(); ++t) {
    for (int r : graph.task_resources(t)) {
      events.push_back({{"ph", "X"},
                        {"name", graph.task_name(t)},
                        {"pid", pids[graph.resource_group(r)]},
                        {"tid", r},
                        {"ts", timing[t].start_s * 1e6},
                        {"dur", (timing[t].end_s - timing[t].start_s) * 1e6}});
    }
  }
  std::ofstream out(path);
  out << nlohmann::json{{"traceEvents", events}, {"displayTimeUnit", "ms"}}.dump() << "\n";
  if (!out.good()) throw Error("simulator: cannot write the trace to '" + path + "'");
}

}  // namespace tandem::sim
