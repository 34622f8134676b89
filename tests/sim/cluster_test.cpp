#include "tandem/sim/cluster.h"

#include <gtest/gtest.h>

#include "tandem/core/error.h"

namespace tandem::sim {
namespace {

void expect_refused(const std::string& yaml, const std::string& words) {
  try {
    parse_cluster(yaml, "c.yaml");
    ADD_FAILURE() << "accepted:\n" << yaml;
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("c.yaml"), std::string::npos) << e.what();
  }
}

TEST(Cluster, ReadsEveryPart) {
  const ClusterSpec c = parse_cluster(R"(
name: fat tree
nodes: {devices_per_node: 8, compute_speed: 2.5, cores: 16}
intra_node: {bandwidth_gbps: 200, latency_us: 3}
network: {profile: gloo, label: veth-1gbit}
topology: {kind: fat_tree, oversubscription: 4, leaf_nodes: 32}
collectives: {algorithm: halving_doubling}
stragglers:
  distribution: lognormal
  sigma: 0.2
  slow_nodes: [{node: 3, factor: 2}]
  slow_ranks: [{rank: 5, factor: 1.5}]
failures: {mttf_node_hours: 5000, checkpoint_write_s: 40, restart_all_recovery_s: 120}
)",
                                      "c.yaml");
  EXPECT_EQ(c.name, "fat tree");
  EXPECT_EQ(c.devices_per_node, 8);
  EXPECT_DOUBLE_EQ(c.compute_speed, 2.5);
  EXPECT_EQ(c.cores_per_node, 16);
  EXPECT_DOUBLE_EQ(c.intra.nominal.beta_s_per_byte, 8 / 200e9);
  EXPECT_DOUBLE_EQ(c.intra.nominal.alpha_s, 3e-6);
  ASSERT_TRUE(c.network.from_profile.has_value());
  EXPECT_EQ(*c.network.from_profile, Transport::kGloo);
  EXPECT_EQ(c.network.label, "veth-1gbit");
  EXPECT_EQ(c.topology, Topology::kFatTree);
  EXPECT_DOUBLE_EQ(c.oversubscription, 4);
  EXPECT_EQ(c.leaf_nodes, 32);
  EXPECT_EQ(c.all_reduce_algorithm, Algorithm::kHalvingDoubling);
  EXPECT_EQ(c.slowdown, SlowdownDistribution::kLogNormal);
  ASSERT_EQ(c.slow_nodes.size(), 1u);
  EXPECT_EQ(c.slow_nodes[0].node, 3);
  ASSERT_EQ(c.slow_ranks.size(), 1u);
  EXPECT_EQ(c.slow_ranks[0].rank, 5);
  EXPECT_DOUBLE_EQ(c.slow_ranks[0].factor, 1.5);
  EXPECT_DOUBLE_EQ(c.failures.mttf_node_s, 5000 * 3600.0);
  EXPECT_DOUBLE_EQ(c.failures.checkpoint_write_s, 40);
}

TEST(Cluster, DefaultsAreAOneDeviceFatTreeOfTenGigabit) {
  const ClusterSpec c = parse_cluster("name: x\n", "c.yaml");
  EXPECT_EQ(c.devices_per_node, 1);
  EXPECT_DOUBLE_EQ(c.network.nominal.beta_s_per_byte, 8 / 10e9);
  EXPECT_FALSE(c.all_reduce_algorithm.has_value());
  EXPECT_EQ(c.failures.mttf_node_s, 0);
}

TEST(Cluster, MalformedInputNamesTheKey) {
  expect_refused("nodes: {devices_per_node: 0}", "nodes.devices_per_node");
  expect_refused("nodes: {devices_per_node: many}", "nodes.devices_per_node");
  expect_refused("nodes: {devices_per_node: 2.5}", "whole number");
  expect_refused("network: {bandwidth_gbps: -1}", "network.bandwidth_gbps");
  expect_refused("network: {bandwith_gbps: 10}", "network.bandwith_gbps");
  expect_refused("network: {profile: nccl}", "network.profile");
  expect_refused("topology: {kind: torus}", "topology.kind");
  expect_refused("collectives: {algorithm: butterfly}", "collectives.algorithm");
  expect_refused("stragglers: {slow_nodes: [{node: 1}]}", "slow_nodes[0]");
  expect_refused("stragglers: {slow_ranks: [{rank: 1, factor: 0.5}]}", "slow_ranks[0].factor");
  expect_refused("gpus: 8", "'gpus'");
  expect_refused("nodes: [1, 2]", "nodes");
  expect_refused("nodes: {devices_per_node: 8\n", "not valid YAML");
  expect_refused("- just a list", "one YAML mapping");
  EXPECT_THROW(read_cluster("/nonexistent/cluster.yaml"), InvalidArgument);
}

}  // namespace
}  // namespace tandem::sim
