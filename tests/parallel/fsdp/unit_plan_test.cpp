// The FSDP wrap policies: which parameters form which unit.
#include "src/parallel/fsdp/unit_plan.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "tandem/core/error.h"
#include "tandem/train/models/gpt_mini.h"
#include "tests/parallel/support/equivalence.h"

namespace tandem::parallel::detail {
namespace {

struct Fixture {
  Fixture() {
    model = std::make_shared<train::GptMiniImpl>(testing::small_gpt());
    for (const auto& item : model->named_parameters()) names.push_back(item.key());
  }
  std::vector<std::string> modules_of(const FsdpWrapPolicy& policy) const {
    std::vector<std::string> out;
    for (const auto& u : plan_units(*model, names, policy)) out.push_back(u.module);
    return out;
  }
  std::vector<std::string> params_of(const FsdpWrapPolicy& policy,
                                     const std::string& module) const {
    std::vector<std::string> out;
    for (const auto& u : plan_units(*model, names, policy)) {
      if (u.module != module) continue;
      for (size_t i : u.params) out.push_back(names[i]);
    }
    return out;
  }
  std::shared_ptr<train::GptMiniImpl> model;
  std::vector<std::string> names;
};

using Names = std::vector<std::string>;

TEST(UnitPlan, ByModuleTypeWithOrWithoutNamespaces) {
  Fixture f;
  FsdpWrapPolicy p;
  p.module_types = {"GptBlockImpl"};
  EXPECT_EQ(f.modules_of(p), (Names{"", "block0", "block1"}));
  EXPECT_EQ(f.params_of(p, ""),
            (Names{"token_embedding.weight", "position_embedding.weight", "ln_final.weight",
                   "ln_final.bias", "lm_head.weight", "lm_head.bias"}));
  EXPECT_EQ(f.params_of(p, "block1").size(), 12u);
  p.module_types = {"tandem::train::GptBlockImpl"};
  EXPECT_EQ(f.modules_of(p), (Names{"", "block0", "block1"}));
}

TEST(UnitPlan, NestedUnitsTakeTheirOwnParameters) {
  Fixture f;
  FsdpWrapPolicy p;
  p.module_types = {"GptBlockImpl", "LinearImpl"};
  Names modules = f.modules_of(p);
  EXPECT_EQ(modules.size(), 1u + 2 * 5 + 1);  // root, per block (itself + 4 Linear), lm_head
  EXPECT_EQ(f.params_of(p, "block0"), (Names{"block0.ln1.weight", "block0.ln1.bias",
                                             "block0.ln2.weight", "block0.ln2.bias"}));
  EXPECT_EQ(f.params_of(p, "block0.attn.qkv"),
            (Names{"block0.attn.qkv.weight", "block0.attn.qkv.bias"}));
}

TEST(UnitPlan, BySizeBottomUp) {
  Fixture f;
  FsdpWrapPolicy p;
  p.min_num_params = 10'000;  // a block has 12,704; lm_head 2,013
  EXPECT_EQ(f.modules_of(p), (Names{"", "block0", "block1"}));
  p.min_num_params = 3'000;  // qkv 3,168, fc 4,224, fc_proj 4,128; a block's rest 1,184
  EXPECT_EQ(f.modules_of(p), (Names{"", "block0.attn.qkv", "block0.fc", "block0.fc_proj",
                                    "block1.attn.qkv", "block1.fc", "block1.fc_proj"}));
  EXPECT_EQ(f.params_of(p, "").size(), 6u + 2 * 6);  // root + each block's LayerNorms and proj
}

TEST(UnitPlan, ByNameAndTheRootUnit) {
  Fixture f;
  FsdpWrapPolicy p;
  p.module_names = {"block1.attn"};
  EXPECT_EQ(f.modules_of(p), (Names{"", "block1.attn"}));
  EXPECT_EQ(f.params_of(p, "block1.attn"),
            (Names{"block1.attn.qkv.weight", "block1.attn.qkv.bias", "block1.attn.proj.weight",
                   "block1.attn.proj.bias"}));
  EXPECT_EQ(f.modules_of({}), (Names{""}));  // no policy: one unit
}

TEST(UnitPlan, TypeNamesMatchWholeComponents) {
  EXPECT_TRUE(module_type_matches("tandem::train::GptBlockImpl", "GptBlockImpl"));
  EXPECT_TRUE(module_type_matches("tandem::train::GptBlockImpl", "train::GptBlockImpl"));
  EXPECT_FALSE(module_type_matches("tandem::train::GptBlockImpl", "BlockImpl"));
  EXPECT_FALSE(module_type_matches("tandem::train::GptBlockImpl", "GptBlock"));
}

TEST(UnitPlan, PoliciesThatMatchNothingAreErrors) {
  Fixture f;
  FsdpWrapPolicy p;
  p.module_names = {"block9"};
  EXPECT_THROW(f.modules_of(p), InvalidArgument);
  p = {};
  p.module_types = {"Conv2dImpl"};
  EXPECT_THROW(f.modules_of(p), InvalidArgument);
}

TEST(UnitPlan, PoliciesParseFromText) {
  EXPECT_EQ(parse_fsdp_wrap_policy("type:GptBlockImpl,LinearImpl").module_types,
            (Names{"GptBlockImpl", "LinearImpl"}));
  EXPECT_EQ(parse_fsdp_wrap_policy("size:100000").min_num_params, 100000);
  EXPECT_EQ(parse_fsdp_wrap_policy("name:block0").module_names, (Names{"block0"}));
  FsdpWrapPolicy none = parse_fsdp_wrap_policy("none");
  EXPECT_TRUE(none.module_types.empty() && none.module_names.empty() && none.min_num_params == 0);
  for (const char* bad : {"", "type:", "GptBlockImpl", "size:12x", "size:0", "kind:x"}) {
    try {
      parse_fsdp_wrap_policy(bad);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find(std::string("'") + bad + "'"), std::string::npos)
          << e.what();
    }
  }
}

}  // namespace
}  // namespace tandem::parallel::detail
