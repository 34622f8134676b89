#include "tandem/sim/cluster.h"

#include <yaml-cpp/yaml.h>

#include <fstream>
#include <initializer_list>
#include <sstream>

#include "tandem/core/check.h"

namespace tandem::sim {
namespace {

// Reads one YAML mapping, naming `path` ("network.bandwidth_gbps") and the
// line in every error, and refusing keys it does not know.
class Section {
 public:
  Section(const YAML::Node& node, std::string source, std::string path,
          std::initializer_list<const char*> keys)
      : node_(node), source_(std::move(source)), path_(std::move(path)) {
    if (!node_) return;
    if (!node_.IsMap()) fail(node_, "must be a mapping of keys to values");
    for (const auto& entry : node_) {
      const auto key = entry.first.as<std::string>();
      bool known = false;
      std::string list;
      for (const char* k : keys) {
        known = known || key == k;
        list += list.empty() ? k : std::string(", ") + k;
      }
      if (!known) {
        fail(entry.first, fmt::format("is not a key of '{}' (known: {})",
                                      path_.empty() ? "the top level" : path_, list),
             key);
      }
    }
  }

  bool has(const char* key) const { return node_ && node_[key]; }
  YAML::Node child(const char* key) const {
    return node_ ? node_[key] : YAML::Node(YAML::NodeType::Undefined);
  }
  std::string path_of(const char* key) const { return path_.empty() ? key : path_ + "." + key; }

  double number(const char* key, double fallback, double min, bool strict_min = false) const {
    if (!has(key)) return fallback;
    const YAML::Node v = node_[key];
    double x = 0;
    try {
      x = v.as<double>();
    } catch (const YAML::Exception&) {
      fail(v, fmt::format("must be a number (got '{}')", text_of(v)), key);
    }
    if (strict_min ? !(x > min) : !(x >= min)) {
      fail(v, fmt::format("must be {} {} (got {})", strict_min ? ">" : ">=", min, x), key);
    }
    return x;
  }

  int integer(const char* key, int fallback, int min) const {
    const double x = number(key, fallback, min);
    if (x != static_cast<int>(x)) {
      fail(node_[key], fmt::format("must be a whole number (got {})", x), key);
    }
    return static_cast<int>(x);
  }

  std::string text(const char* key, const std::string& fallback) const {
    if (!has(key)) return fallback;
    const YAML::Node v = node_[key];
    if (!v.IsScalar()) fail(v, "must be a word, not a list or mapping", key);
    return v.as<std::string>();
  }

  [[noreturn]] void fail(const YAML::Node& at, const std::string& what,
                         const std::string& key = "") const {
    const std::string where = key.empty() ? path_ : path_of(key.c_str());
    const YAML::Mark mark = at.Mark();
    const std::string line = mark.line >= 0 ? fmt::format(" (line {})", mark.line + 1) : "";
    detail::throw_invalid_argument(
        fmt::format("cluster '{}'{}: key '{}' {}", source_, line, where, what));
  }

  const std::string& source() const { return source_; }

 private:
  static std::string text_of(const YAML::Node& v) {
    return v.IsScalar() ? v.Scalar() : std::string(v.IsSequence() ? "a list" : "a mapping");
  }

  YAML::Node node_;
  std::string source_;
  std::string path_;
};

template <typename E>
E read_choice(const Section& s, const char* key, E fallback,
              std::initializer_list<std::pair<const char*, E>> names) {
  if (!s.has(key)) return fallback;
  const std::string text = s.text(key, "");
  std::string list;
  for (const auto& [name, value] : names) {
    if (text == name) return value;
    list += list.empty() ? name : std::string(", ") + name;
  }
  s.fail(s.child(key), fmt::format("must be one of {} (got '{}')", list, text), key);
}

LinkSpec read_link(const Section& parent, const char* key, double default_gbps,
                   double default_latency_us) {
  const Section s(parent.child(key), parent.source(), parent.path_of(key),
                  {"bandwidth_gbps", "latency_us", "profile", "label"});
  LinkSpec link;
  link.nominal = LinkParams::from_bandwidth(s.number("bandwidth_gbps", default_gbps, 0, true) * 1e9,
                                            s.number("latency_us", default_latency_us, 0) * 1e-6);
  if (s.has("profile")) {
    link.from_profile = read_choice<Transport>(
        s, "profile", Transport::kGloo,
        {{"shm", Transport::kShm}, {"gloo", Transport::kGloo}, {"mpi", Transport::kMpi}});
  }
  link.label = s.text("label", "");
  return link;
}

// stragglers.slow_nodes or slow_ranks: a list of {node|rank: i, factor: f}.
template <typename T>
std::vector<T> read_slow(const Section& s, const char* key, const char* index_key) {
  std::vector<T> out;
  const YAML::Node list = s.child(key);
  if (!list) return out;
  if (!list.IsSequence()) {
    s.fail(list, fmt::format("must be a list of {{{}, factor}}", index_key), key);
  }
  for (size_t i = 0; i < list.size(); ++i) {
    const std::string path = fmt::format("{}[{}]", s.path_of(key), i);
    const Section item(list[i], s.source(), path, {index_key, "factor"});
    TANDEM_CHECK(item.has(index_key) && item.has("factor"),
                 "cluster '{}': key '{}' needs both '{}' and 'factor'", s.source(), path,
                 index_key);
    out.push_back({item.integer(index_key, 0, 0), item.number("factor", 1, 1)});
  }
  return out;
}

void read_stragglers(const Section& top, ClusterSpec& c) {
  const Section s(top.child("stragglers"), top.source(), "stragglers",
                  {"distribution", "sigma", "max", "slow_nodes", "slow_ranks"});
  c.slowdown = read_choice<SlowdownDistribution>(
      s, "distribution", SlowdownDistribution::kNone,
      {{"none", SlowdownDistribution::kNone},
       {"lognormal", SlowdownDistribution::kLogNormal},
       {"uniform", SlowdownDistribution::kUniform},
       {"profile", SlowdownDistribution::kProfile}});
  c.slowdown_sigma = s.number("sigma", 0.1, 0);
  c.slowdown_max = s.number("max", 1.5, 1);
  c.slow_nodes = read_slow<SlowNode>(s, "slow_nodes", "node");
  c.slow_ranks = read_slow<SlowRank>(s, "slow_ranks", "rank");
}

void read_failures(const Section& top, ClusterSpec& c) {
  const Section s(top.child("failures"), top.source(), "failures",
                  {"mttf_node_hours", "checkpoint_write_s", "checkpoint_interval_s",
                   "restart_all_recovery_s", "keep_survivors_recovery_s"});
  FailureSpec& f = c.failures;
  f.mttf_node_s = s.number("mttf_node_hours", 0, 0) * 3600;
  f.checkpoint_write_s = s.number("checkpoint_write_s", 30, 0);
  f.checkpoint_interval_s = s.number("checkpoint_interval_s", 0, 0);
  f.restart_all_recovery_s = s.number("restart_all_recovery_s", 300, 0);
  f.keep_survivors_recovery_s = s.number("keep_survivors_recovery_s", 5, 0);
}

}  // namespace

ClusterSpec parse_cluster(const std::string& yaml_text, const std::string& source) {
  YAML::Node doc;
  try {
    doc = YAML::Load(yaml_text);
  } catch (const YAML::ParserException& e) {
    detail::throw_invalid_argument(fmt::format("cluster '{}' (line {}): not valid YAML: {}", source,
                                               e.mark.line + 1, e.msg));
  }
  TANDEM_CHECK(doc.IsMap(), "cluster '{}': the file must be one YAML mapping (nodes:, network:, ...)",
               source);
  const Section top(doc, source, "",
                    {"name", "nodes", "intra_node", "network", "topology", "collectives",
                     "stragglers", "failures"});
  ClusterSpec c;
  c.name = top.text("name", source);
  const Section nodes(top.child("nodes"), source, "nodes",
                      {"devices_per_node", "compute_speed", "cores", "core_speeds"});
  c.devices_per_node = nodes.integer("devices_per_node", 1, 1);
  c.compute_speed = nodes.number("compute_speed", 1, 0, true);
  c.cores_per_node = nodes.integer("cores", 0, 0);
  if (const YAML::Node speeds = nodes.child("core_speeds")) {
    if (!speeds.IsSequence() || speeds.size() == 0) {
      nodes.fail(speeds, "must be a list of speeds > 0, one per core", "core_speeds");
    }
    for (size_t i = 0; i < speeds.size(); ++i) {
      double v = 0;
      try {
        v = speeds[i].as<double>();
      } catch (const YAML::Exception&) {
        v = -1;
      }
      if (!(v > 0)) nodes.fail(speeds[i], "must hold speeds > 0", "core_speeds");
      c.core_speeds.push_back(v);
    }
    if (nodes.has("cores") && c.cores_per_node != static_cast<int>(c.core_speeds.size())) {
      nodes.fail(speeds, fmt::format("lists {} cores but 'cores' is {}", c.core_speeds.size(),
                                     c.cores_per_node),
                 "core_speeds");
    }
    c.cores_per_node = static_cast<int>(c.core_speeds.size());
  }
  c.intra = read_link(top, "intra_node", 100, 2);
  c.network = read_link(top, "network", 10, 20);
  const Section topo(top.child("topology"), source, "topology",
                     {"kind", "oversubscription", "leaf_nodes"});
  c.topology = read_choice<Topology>(topo, "kind", Topology::kFatTree,
                                     {{"single_host", Topology::kSingleHost},
                                      {"fat_tree", Topology::kFatTree},
                                      {"ring", Topology::kRing}});
  c.oversubscription = topo.number("oversubscription", 1, 1);
  c.leaf_nodes = topo.integer("leaf_nodes", 16, 1);
  const Section coll(top.child("collectives"), source, "collectives", {"algorithm"});
  const Algorithm algorithm = read_choice<Algorithm>(
      coll, "algorithm", Algorithm::kDirect,
      {{"auto", Algorithm::kDirect},
       {"ring", Algorithm::kRing},
       {"tree", Algorithm::kTree},
       {"halving_doubling", Algorithm::kHalvingDoubling},
       {"hierarchical", Algorithm::kHierarchical}});
  if (algorithm != Algorithm::kDirect) c.all_reduce_algorithm = algorithm;
  read_stragglers(top, c);
  read_failures(top, c);
  return c;
}

ClusterSpec read_cluster(const std::string& path) {
  std::ifstream in(path);
  TANDEM_CHECK(in.good(), "cluster '{}': cannot open the file", path);
  std::stringstream text;
  text << in.rdbuf();
  return parse_cluster(text.str(), path);
}

}  // namespace tandem::sim
