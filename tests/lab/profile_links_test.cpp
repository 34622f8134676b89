#include "lab/profile_links.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <string>

#include "tandem/core/error.h"
#include "tests/support/command.h"

namespace tandem::lab {
namespace {

using sim::LinkOp;
using sim::Transport;

const std::string kTandem = TANDEM_BINARY_DIR "/tools/tandem";
const std::string kRun = TANDEM_BINARY_DIR "/tools/tandem-run";

TEST(ProfileLinks, SweepSizesGrowByTheFactor) {
  EXPECT_EQ(sweep_sizes(4096, 1 << 20, 4),
            (std::vector<int64_t>{4096, 16384, 65536, 262144, 1048576}));
  // The default sweep: 4 KiB .. 16 MiB.
  const ProfileLinksOptions o;
  EXPECT_EQ(sweep_sizes(o.min_bytes, o.max_bytes, o.step_factor).size(), 7u);
  EXPECT_THROW(sweep_sizes(0, 4096, 4), InvalidArgument);
  EXPECT_THROW(sweep_sizes(8192, 4096, 4), InvalidArgument);
  EXPECT_THROW(sweep_sizes(4096, 1 << 20, 1), InvalidArgument);
  try {
    sweep_sizes(4096, 8192, 4);
    FAIL() << "one size accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("raise --max-bytes"), std::string::npos) << e.what();
  }
}

TEST(ProfileLinks, ReachableTransportsFollowTheJob) {
  using V = std::vector<Transport>;
  EXPECT_EQ(reachable_transports({}, 1, false), (V{Transport::kShm, Transport::kGloo}));
  EXPECT_EQ(reachable_transports({}, 2, false), (V{Transport::kGloo}));
  EXPECT_EQ(reachable_transports({}, 1, true),
            (V{Transport::kShm, Transport::kGloo, Transport::kMpi}));
  EXPECT_EQ(reachable_transports({Transport::kGloo}, 1, false), (V{Transport::kGloo}));
  EXPECT_THROW(reachable_transports({Transport::kShm}, 2, false), InvalidArgument);
  try {
    reachable_transports({Transport::kMpi}, 1, false);
    FAIL() << "mpi accepted without mpirun";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("--transports mpi needs a launch under mpirun"),
              std::string::npos)
        << e.what();
  }
}

// `tandem profile links` as the user runs it: 2 ranks under tandem-run, a
// short sweep; rank 0's profile holds a fit per transport and operation.
TEST(ProfileLinks, TwoRanksUnderTandemRunFitEveryTransportAndOp) {
  const auto out = std::filesystem::temp_directory_path() /
                   ("tandem_links_test_" + std::to_string(::getpid()) + ".json");
  const auto r = testing::run_command(kRun + " --nproc-per-node 2 -- " + kTandem +
                                          " profile links --max-bytes 4194304 --rounds 2 "
                                          "--label loopback --out " +
                                          out.string(),
                                      120);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("alpha_us"), std::string::npos) << r.output;
  const sim::Profile p = sim::read_profile(out.string());
  std::filesystem::remove(out);
  EXPECT_FALSE(p.compute);
  std::map<std::pair<Transport, LinkOp>, sim::LinkFit> fits;
  for (const auto& f : p.links) fits[{f.transport, f.op}] = f;
  // shm and gloo (no mpirun here), five operations each.
  EXPECT_EQ(p.links.size(), 10u);
  for (Transport t : {Transport::kShm, Transport::kGloo}) {
    for (LinkOp op : {LinkOp::kAllReduce, LinkOp::kReduceScatter, LinkOp::kAllGather,
                      LinkOp::kBroadcast, LinkOp::kSendRecv}) {
      const std::string what = std::string(sim::name_of(t)) + " " + std::string(sim::name_of(op));
      ASSERT_EQ(fits.count({t, op}), 1u) << what;
      const sim::LinkFit& f = fits[{t, op}];
      EXPECT_EQ(f.ranks, 2) << what;
      EXPECT_EQ(f.hosts, 1) << what;
      EXPECT_EQ(f.algorithm, sim::Algorithm::kDirect) << what;
      EXPECT_EQ(f.label, "loopback") << what;
      EXPECT_EQ(f.points.size(), 6u) << what;  // 4 KiB to 4 MiB by 4
      EXPECT_GE(f.alpha_s, 0.0) << what;
      EXPECT_TRUE(std::isfinite(f.max_relative_error)) << what;
      if (op == LinkOp::kAllReduce || op == LinkOp::kSendRecv) {
        EXPECT_GT(f.beta_s_per_byte, 0.0) << what;
      }
    }
  }
}

TEST(ProfileLinks, OneProcessIsRefused) {
  const auto r =
      testing::run_command("env -u RANK -u WORLD_SIZE -u OMPI_COMM_WORLD_SIZE -u SLURM_NTASKS " +
                               kTandem + " profile links --out /dev/null",
                           60);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("needs a job of 2 or more ranks (got 1)"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace tandem::lab
