#include "tandem/launch/elastic_protocol.h"

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "tandem/core/error.h"

namespace tandem::launch::elastic {
namespace {

env::Lookup lookup_of(std::map<std::string, std::string> vars) {
  return [vars](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

std::string env_error(std::map<std::string, std::string> vars) {
  try {
    read_elastic_env(lookup_of(std::move(vars)));
  } catch (const InvalidArgument& e) {
    return e.what();
  }
  return "no error";
}

TEST(ElasticProtocol, KeyNames) {
  EXPECT_EQ(join_key(3), "join/3");
  EXPECT_EQ(heartbeat_key(7), "hb/7");
  EXPECT_EQ(exit_key(1), "exit/1");
  EXPECT_EQ(members_key(2), "gen/2/members");
  EXPECT_EQ(cause_key(2), "gen/2/cause");
  EXPECT_EQ(end_key(0), "gen/0/end");
  EXPECT_EQ(left_key(4, 5), "gen/4/left/5");
  EXPECT_EQ(evicted_key(9), "evicted/9");
}

TEST(ElasticProtocol, MembersRoundTrip) {
  EXPECT_EQ(format_members({3, 0, 5}), "3,0,5");
  EXPECT_EQ(format_members({}), "");
  EXPECT_EQ(parse_members("3,0,5"), (std::vector<int>{3, 0, 5}));
  EXPECT_EQ(parse_members("12"), (std::vector<int>{12}));
}

TEST(ElasticProtocol, ParseMembersRejectsGarbage) {
  for (const std::string& bad :
       std::vector<std::string>{"", ",", "1,", ",1", "1,,2", "1,a", "-1", " 1", "1 ", "1;2",
                                "99999999999", "1,1", std::string("1\0,2", 4)}) {
    try {
      parse_members(bad);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("is not a comma-separated list of worker ids"),
                std::string::npos)
          << e.what();
    }
  }
  try {
    parse_members(std::string("1\0,2", 4));
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("'1\\x00,2' (4 bytes)"), std::string::npos) << e.what();
  }
}

TEST(ElasticProtocol, RecordExitAppendsNumberedRecords) {
  auto store = make_memory_store();
  record_exit(*store, 2, "signal SIGKILL");
  record_exit(*store, 0, "exit code 1");
  EXPECT_EQ(store->add("elastic/exit/count", 0), 2);
  EXPECT_EQ(store->get("elastic/exit/1", Millis(100)), "2\tsignal SIGKILL");
  EXPECT_EQ(store->get("elastic/exit/2", Millis(100)), "0\texit code 1");
}

TEST(ElasticProtocol, NewWorkerIdsAreFreshAndAboveTheInitialOnes) {
  auto store = make_memory_store();
  EXPECT_EQ(new_worker_id(*store, 4), 4);
  EXPECT_EQ(new_worker_id(*store, 4), 5);
  EXPECT_EQ(new_worker_id(*store, 4), 6);
  EXPECT_THROW(new_worker_id(*store, -1), InvalidArgument);
}

TEST(ElasticProtocol, ReadsTheEnvironment) {
  EXPECT_FALSE(read_elastic_env(lookup_of({})).enabled);
  auto e = read_elastic_env(lookup_of({{"TANDEM_ELASTIC", "2:4"},
                                       {"TANDEM_WORKER_ID", "5"},
                                       {"TANDEM_ELASTIC_JOIN", "1"},
                                       {"TANDEM_HEARTBEAT_TIMEOUT", "1.5"}}));
  EXPECT_TRUE(e.enabled);
  EXPECT_EQ(e.min_workers, 2);
  EXPECT_EQ(e.max_workers, 4);
  EXPECT_EQ(e.worker_id, 5);
  EXPECT_TRUE(e.joining);
  EXPECT_EQ(e.heartbeat_timeout, Millis(1500));
  auto d = read_elastic_env(lookup_of({{"TANDEM_ELASTIC", "3:3"}, {"TANDEM_WORKER_ID", "0"}}));
  EXPECT_FALSE(d.joining);
  EXPECT_EQ(d.heartbeat_timeout, kDefaultHeartbeatTimeout);
}

TEST(ElasticProtocol, MalformedEnvironmentNamesTheVariable) {
  for (const char* spec : {"4", "0:2", "3:2", "a:b", "2:", ":2", "2:4:6", "-1:2"}) {
    EXPECT_NE(
        env_error({{"TANDEM_ELASTIC", spec}, {"TANDEM_WORKER_ID", "0"}}).find("TANDEM_ELASTIC='"),
        std::string::npos)
        << spec;
  }
  EXPECT_NE(env_error({{"TANDEM_ELASTIC", "1:2"}}).find("TANDEM_WORKER_ID is unset"),
            std::string::npos);
  EXPECT_NE(
      env_error({{"TANDEM_ELASTIC", "1:2"}, {"TANDEM_WORKER_ID", "x"}}).find("TANDEM_WORKER_ID"),
      std::string::npos);
  EXPECT_NE(
      env_error(
          {{"TANDEM_ELASTIC", "1:2"}, {"TANDEM_WORKER_ID", "0"}, {"TANDEM_ELASTIC_JOIN", "yes"}})
          .find("TANDEM_ELASTIC_JOIN='yes'"),
      std::string::npos);
  EXPECT_NE(
      env_error(
          {{"TANDEM_ELASTIC", "1:2"}, {"TANDEM_WORKER_ID", "0"}, {"TANDEM_HEARTBEAT_TIMEOUT", "0"}})
          .find("TANDEM_HEARTBEAT_TIMEOUT"),
      std::string::npos);
}

}  // namespace
}  // namespace tandem::launch::elastic
