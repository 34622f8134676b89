#include "tandem/detect/train_args.h"

#include <gtest/gtest.h>

#include "tandem/core/error.h"

namespace tandem::detect {
namespace {

TEST(TrainArgs, ParsesKeyValueAndDashedForms) {
  TrainArgs a;
  parse_train_args({"model=yolo-s", "data=shapes.yaml", "epochs=30", "--imgsz", "160", "--batch=16",
                    "device=0,1", "cos_lr=True", "lr0=0.02"},
                   a);
  EXPECT_EQ(a.model, "yolo-s");
  EXPECT_EQ(a.data, "shapes.yaml");
  EXPECT_EQ(a.epochs, 30);
  EXPECT_EQ(a.imgsz, 160);
  EXPECT_EQ(a.batch, 16);
  EXPECT_EQ(a.device, (std::vector<int>{0, 1}));
  EXPECT_TRUE(a.cos_lr);
  EXPECT_DOUBLE_EQ(a.lr0, 0.02);
  EXPECT_EQ(a.momentum, 0.937) << "untouched keys keep Ultralytics' defaults";
}

TEST(TrainArgs, UnknownKeyNamesItAndTheValidOnes) {
  TrainArgs a;
  try {
    parse_train_args({"epochz=3"}, a);
    FAIL() << "no error";
  } catch (const InvalidArgument& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("unknown key 'epochz'"), std::string::npos) << m;
    EXPECT_NE(m.find("epochs"), std::string::npos) << m;
    EXPECT_NE(m.find("close_mosaic"), std::string::npos) << m;
  }
  EXPECT_THROW(parse_train_args({"--nope", "1"}, a), InvalidArgument);
  EXPECT_THROW(parse_train_args({"epochs"}, a), InvalidArgument);
  EXPECT_THROW(parse_train_args({"--epochs"}, a), InvalidArgument);
}

TEST(TrainArgs, BadValuesNameTheKey) {
  TrainArgs a;
  for (const auto& bad : std::vector<std::string>{"epochs=abc", "lr0=x", "cos_lr=maybe", "device=a",
                                                  "device=0,0", "dtype=half"}) {
    EXPECT_THROW(parse_train_args({bad}, a), InvalidArgument) << bad;
  }
}

TEST(TrainArgs, WorkersAndCache) {
  TrainArgs a;
  EXPECT_EQ(a.cache, ImageCache::kOff);
  parse_train_args({"workers=3", "cache=ram"}, a);
  EXPECT_EQ(a.workers, 3);
  EXPECT_EQ(a.cache, ImageCache::kRam);
  for (const auto& [text, want] :
       std::vector<std::pair<std::string, ImageCache>>{{"True", ImageCache::kRam},
                                                       {"disk", ImageCache::kDisk},
                                                       {"False", ImageCache::kOff},
                                                       {"false", ImageCache::kOff}}) {
    parse_train_args({"cache=" + text}, a);
    EXPECT_EQ(a.cache, want) << text;
  }
  EXPECT_THROW(parse_train_args({"cache=gpu"}, a), InvalidArgument);
  a.data = "d.yaml";
  a.workers = -1;
  EXPECT_THROW(validate(a), InvalidArgument);
  a.workers = 0;
  a.cache = ImageCache::kDisk;
  TrainArgs b;
  parse_train_args_yaml(to_yaml(a), b);
  EXPECT_EQ(b.cache, ImageCache::kDisk);
  EXPECT_EQ(b.workers, 0);
}

TEST(TrainArgs, Devices) {
  EXPECT_TRUE(parse_device("cpu").empty());
  EXPECT_TRUE(parse_device("").empty());
  EXPECT_EQ(parse_device("0"), (std::vector<int>{0}));
  EXPECT_EQ(parse_device("[0, 1]"), (std::vector<int>{0, 1}));
  TrainArgs a;
  a.device = {0, 1, 2};
  EXPECT_EQ(world_size_of(a), 3);
}

TEST(TrainArgs, ValidateChecksRanges) {
  TrainArgs a;
  a.data = "d.yaml";
  EXPECT_NO_THROW(validate(a));
  auto expect_bad = [](TrainArgs b, const std::string& word) {
    try {
      validate(b);
      ADD_FAILURE() << "no error for " << word;
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find(word), std::string::npos) << e.what();
    }
  };
  TrainArgs b = a;
  b.imgsz = 100;
  expect_bad(b, "imgsz");
  b = a;
  b.device = {0, 1, 2};
  b.batch = 16;
  expect_bad(b, "batch=16");
  b = a;
  b.data = "";
  expect_bad(b, "data=");
  b = a;
  b.mosaic = 0.5;
  expect_bad(b, "mosaic");
}

TEST(TrainArgs, YamlRoundTrip) {
  TrainArgs a;
  parse_train_args({"data=/x/shapes.yaml", "epochs=7", "device=0,1", "name=run", "sync_bn=true",
                    "dtype=float64"},
                   a);
  TrainArgs b;
  parse_train_args_yaml(to_yaml(a), b);
  EXPECT_EQ(to_yaml(a), to_yaml(b));
  EXPECT_EQ(b.device, (std::vector<int>{0, 1}));
  EXPECT_EQ(b.dtype, train::Dtype::kFloat64);
  EXPECT_NE(to_yaml(a).find("epochs: 7\n"), std::string::npos);
}

}  // namespace
}  // namespace tandem::detect
