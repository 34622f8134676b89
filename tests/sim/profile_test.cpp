#include "tandem/sim/profile.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "tandem/core/error.h"

namespace tandem::sim {
namespace {

using nlohmann::json;

Profile sample_profile() {
  ComputeProfile c;
  c.model = "mlp";
  c.model_version = "0123abcd";
  c.dtype = "float32";
  c.batch_size = 32;
  c.steps = 10;
  c.layers = {{.name = "layers.0",
               .forward_s = 1e-4,
               .backward_s = 2e-4,
               .forward_spread_s = 1e-6,
               .backward_spread_s = 2e-6,
               .param_bytes = 4096,
               .grad_bytes = 4096,
               .activation_bytes = 8192,
               .output_bytes = 2048},
              {.name = "layers.1", .forward_s = 3e-4, .backward_s = 5e-4, .param_bytes = 1024}};
  c.optimizer_s = 5e-5;
  c.other_s = 1e-5;
  c.step_s = 1.16e-3;
  c.step_spread_s = 3e-5;
  c.step_times_s = {1.1e-3, 1.16e-3, 1.3e-3};
  c.buffer_bytes = 520;
  LinkFit l;
  l.transport = Transport::kGloo;
  l.op = LinkOp::kSendRecv;
  l.ranks = 2;
  l.label = "loopback";
  l.points = {{4096, 3e-5}, {65536, 6e-5}};
  fit_alpha_beta(l);
  Profile p;
  p.compute = c;
  p.links = {l};
  return p;
}

TEST(Profile, EnumSpellingsRoundTrip) {
  for (Transport t : {Transport::kShm, Transport::kGloo, Transport::kMpi}) {
    EXPECT_EQ(parse_transport(name_of(t), "t"), t);
  }
  for (LinkOp op : {LinkOp::kAllReduce, LinkOp::kReduceScatter, LinkOp::kAllGather,
                    LinkOp::kBroadcast, LinkOp::kSendRecv}) {
    EXPECT_EQ(parse_link_op(name_of(op), "op"), op);
  }
  for (Algorithm a : {Algorithm::kRing, Algorithm::kTree, Algorithm::kHalvingDoubling,
                      Algorithm::kHierarchical, Algorithm::kDirect}) {
    EXPECT_EQ(parse_algorithm(name_of(a), "a"), a);
  }
  EXPECT_EQ(name_of(Algorithm::kHalvingDoubling), "halving_doubling");
  try {
    parse_transport("tcp", "--transport");
    FAIL() << "no throw";
  } catch (const InvalidArgument& e) {
    EXPECT_STREQ(e.what(), "--transport must be one of shm, gloo, mpi (got \"tcp\")");
  }
}

TEST(Profile, SumsOverLayers) {
  const ComputeProfile c = *sample_profile().compute;
  EXPECT_EQ(c.param_bytes(), 5120);
  EXPECT_DOUBLE_EQ(c.forward_s(), 4e-4);
  EXPECT_DOUBLE_EQ(c.backward_s(), 7e-4);
}

TEST(Profile, JsonRoundTripKeepsEveryField) {
  const Profile p = sample_profile();
  const json doc = to_json(p);
  EXPECT_EQ(doc["format"], "tandem-profile");
  EXPECT_EQ(doc["version"], 1);
  // Through text, as a file would go.
  const Profile q = parse_profile(json::parse(doc.dump()), "<string>");
  EXPECT_EQ(to_json(q), doc);
  ASSERT_TRUE(q.compute);
  EXPECT_EQ(q.compute->layers.size(), 2u);
  EXPECT_EQ(q.compute->layers[0].activation_bytes, 8192);
  EXPECT_EQ(q.compute->layers[1].name, "layers.1");
  EXPECT_EQ(q.compute->buffer_bytes, 520);
  ASSERT_EQ(q.links.size(), 1u);
  EXPECT_EQ(q.links[0].op, LinkOp::kSendRecv);
  EXPECT_EQ(q.links[0].label, "loopback");
  EXPECT_EQ(q.links[0].points.size(), 2u);
}

TEST(Profile, LinksOnlyAndOptionalFields) {
  const json doc = {{"format", "tandem-profile"},
                    {"version", 1},
                    {"extra", "ignored"},
                    {"links",
                     {{{"transport", "shm"},
                       {"op", "all_reduce"},
                       {"algorithm", "ring"},
                       {"ranks", 4},
                       {"hosts", 1},
                       {"alpha_s", 1e-5},
                       {"beta_s_per_byte", 1e-10}}}}};
  const Profile p = parse_profile(doc, "<string>");
  EXPECT_FALSE(p.compute);
  ASSERT_EQ(p.links.size(), 1u);
  EXPECT_EQ(p.links[0].algorithm, Algorithm::kRing);
  EXPECT_EQ(p.links[0].label, "");
  EXPECT_TRUE(p.links[0].points.empty());
  EXPECT_DOUBLE_EQ(p.links[0].seconds(1e6), 1e-5 + 1e-4);
}

TEST(Profile, FitRecoversExactAlphaAndBeta) {
  LinkFit fit;
  const double alpha = 25e-6, beta = 1.0 / 3e9;
  for (int64_t bytes = 4096; bytes <= (16 << 20); bytes *= 4) {
    fit.points.push_back({bytes, alpha + beta * static_cast<double>(bytes)});
  }
  fit_alpha_beta(fit);
  EXPECT_NEAR(fit.alpha_s, alpha, alpha * 1e-9);
  EXPECT_NEAR(fit.beta_s_per_byte, beta, beta * 1e-9);
  EXPECT_LT(fit.max_relative_error, 1e-9);
}

TEST(Profile, FitClampsNegativeAlphaAndRefitsThroughTheOrigin) {
  LinkFit fit;
  // A line whose intercept would be negative.
  fit.points = {{1000, 0.5e-6}, {2000, 2e-6}, {4000, 5e-6}};
  fit_alpha_beta(fit);
  EXPECT_EQ(fit.alpha_s, 0.0);
  EXPECT_GT(fit.beta_s_per_byte, 0.0);
  EXPECT_GT(fit.max_relative_error, 0.0);
  EXPECT_TRUE(std::isfinite(fit.max_relative_error));
}

TEST(Profile, FitTiltedDownByNoisySmallSizesTakesTheSlopeOfTheLargest) {
  // Noisy small sizes tilt both least-squares lines down; the two largest
  // sizes still show the bytes' cost: 0.05 ms over 786432 B.
  LinkFit fit;
  fit.points = {{4096, 1.0e-3}, {16384, 0.9e-3}, {65536, 0.5e-3}, {262144, 0.45e-3},
                {1048576, 0.5e-3}};
  fit_alpha_beta(fit);
  EXPECT_NEAR(fit.beta_s_per_byte, 0.05e-3 / 786432, 1e-15);
  EXPECT_GT(fit.alpha_s, 0.4e-3);
  EXPECT_LT(fit.alpha_s, 0.7e-3);
  // Not even the largest were slower: latency alone.
  fit.points = {{4096, 1.0e-3}, {65536, 0.5e-3}, {1048576, 0.5e-3}};
  fit_alpha_beta(fit);
  EXPECT_EQ(fit.beta_s_per_byte, 0.0);
  EXPECT_GT(fit.alpha_s, 0.0);
}

TEST(Profile, FitRefusesASingleSize) {
  LinkFit fit;
  fit.points = {{4096, 1e-5}, {4096, 1.1e-5}};
  EXPECT_THROW(fit_alpha_beta(fit), InvalidArgument);
  fit.points = {{4096, 1e-5}, {8192, 0.0}};
  EXPECT_THROW(fit_alpha_beta(fit), InvalidArgument);
}

// parse_profile(doc) throws InvalidArgument whose message holds every one of `words`.
void expect_refused(const json& doc, const std::vector<std::string>& words) {
  try {
    parse_profile(doc, "p.json");
    ADD_FAILURE() << "accepted: " << doc.dump();
  } catch (const InvalidArgument& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.rfind("profile 'p.json': ", 0), 0u) << msg;
    for (const auto& w : words) EXPECT_NE(msg.find(w), std::string::npos) << w << " in " << msg;
  }
}

TEST(Profile, MalformedDocumentsNameTheField) {
  const json good = to_json(sample_profile());
  json doc = good;
  doc["compute"]["layers"][1]["forward_s"] = "abc";
  expect_refused(doc, {"field 'compute.layers[1].forward_s' must be a number >= 0 (got \"abc\")"});
  doc = good;
  doc["compute"]["layers"][0]["backward_s"] = -1;
  expect_refused(doc, {"'compute.layers[0].backward_s'", ">= 0", "-1"});
  doc = good;
  doc["compute"]["layers"][0].erase("param_bytes");
  expect_refused(doc, {"field 'compute.layers[0].param_bytes' is missing"});
  doc = good;
  doc["compute"]["batch_size"] = 0;
  expect_refused(doc, {"'compute.batch_size'", "integer >= 1"});
  doc = good;
  doc["compute"]["layers"] = "none";
  expect_refused(doc, {"'compute.layers' must be an array"});
  doc = good;
  doc["compute"]["dtype"] = "int8";
  expect_refused(doc, {"'compute.dtype'", "float32"});
  doc = good;
  doc["links"][0]["transport"] = "tcp";
  expect_refused(doc, {"field 'links[0].transport' must be one of shm, gloo, mpi (got \"tcp\")"});
  doc = good;
  doc["links"][0]["op"] = "all_sum";
  expect_refused(doc, {"'links[0].op'", "all_reduce, reduce_scatter"});
  doc = good;
  doc["links"][0]["algorithm"] = 3;
  expect_refused(doc, {"'links[0].algorithm' must be a string"});
  doc = good;
  doc["links"][0]["points"][1]["bytes"] = 1.5;
  expect_refused(doc, {"'links[0].points[1].bytes'", "integer"});
  doc = good;
  doc["links"][0]["hosts"] = 3;
  expect_refused(doc, {"'links[0].hosts'", "at most 'ranks' (2)"});
}

TEST(Profile, WrongFormatOrVersionIsRefused) {
  json doc = to_json(sample_profile());
  doc["version"] = 2;
  expect_refused(doc, {"'version' is 2; this Tandem reads version 1"});
  doc["version"] = "one";
  expect_refused(doc, {"field 'version'"});
  doc = to_json(sample_profile());
  doc["format"] = "tandem-checkpoint";
  expect_refused(doc, {"'format' must be \"tandem-profile\"", "tandem-checkpoint"});
  doc.erase("format");
  expect_refused(doc, {"'format' must be \"tandem-profile\""});
  expect_refused(json::array({1, 2}), {"must be a JSON object"});
}

class ProfileFile : public ::testing::Test {
 protected:
  std::filesystem::path dir_ = std::filesystem::temp_directory_path() /
                               ("tandem_profile_test_" + std::to_string(::getpid()));
  void SetUp() override { std::filesystem::create_directories(dir_); }
  void TearDown() override { std::filesystem::remove_all(dir_); }
};

TEST_F(ProfileFile, WriteThenReadRoundTrips) {
  const std::string path = (dir_ / "p.json").string();
  write_profile(sample_profile(), path);
  EXPECT_EQ(to_json(read_profile(path)), to_json(sample_profile()));
  // Nothing is left beside it.
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir_), {}), 1);
}

TEST_F(ProfileFile, NonJsonFileNamesThePathAndTheParseError) {
  const std::string path = (dir_ / "broken.json").string();
  std::ofstream(path) << "{\"format\": ";
  try {
    read_profile(path);
    FAIL() << "no throw";
  } catch (const InvalidArgument& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("profile '" + path + "' is not JSON"), std::string::npos) << msg;
    EXPECT_NE(msg.find("parse error"), std::string::npos) << msg;
  }
  EXPECT_THROW(read_profile((dir_ / "missing.json").string()), InvalidArgument);
}

TEST_F(ProfileFile, WriteToAMissingFolderNamesThePath) {
  const std::string path = (dir_ / "no" / "p.json").string();
  try {
    write_profile(sample_profile(), path);
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
}

TEST(Profile, MergeJoinsComputeAndLinks) {
  Profile compute = sample_profile();
  compute.links.clear();
  Profile links = sample_profile();
  links.compute.reset();
  links.links.push_back(links.links[0]);
  const Profile m = merge_profiles(links, compute);
  ASSERT_TRUE(m.compute);
  EXPECT_EQ(m.compute->model, "mlp");
  EXPECT_EQ(m.links.size(), 2u);
}

TEST(Profile, MergeRefusesTwoComputeParts) {
  try {
    merge_profiles(sample_profile(), sample_profile());
    FAIL() << "no throw";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("both profiles have a compute part"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace tandem::sim
