#include "detect/augment.h"

#include <gtest/gtest.h>

#include <opencv2/imgproc.hpp>

namespace tandem::detect::detail {
namespace {

TEST(Augment, LetterboxCentresAndPadsWithGray) {
  cv::Mat wide(50, 100, CV_8UC3, cv::Scalar(10, 20, 30));
  Letterboxed lb = letterbox(wide, 64);
  EXPECT_EQ(lb.image.rows, 64);
  EXPECT_EQ(lb.image.cols, 64);
  EXPECT_DOUBLE_EQ(lb.ratio, 0.64);
  // 100x50 -> 64x32: 16 rows of padding above and below.
  EXPECT_DOUBLE_EQ(lb.pad_x, 0.0);
  EXPECT_DOUBLE_EQ(lb.pad_y, 16.0);
  EXPECT_EQ(lb.image.at<cv::Vec3b>(0, 0), cv::Vec3b(114, 114, 114));
  EXPECT_EQ(lb.image.at<cv::Vec3b>(32, 32), cv::Vec3b(10, 20, 30));
  EXPECT_EQ(lb.image.at<cv::Vec3b>(63, 63), cv::Vec3b(114, 114, 114));
}

TEST(Augment, ResizeLongSide) {
  cv::Mat tall(80, 40, CV_8UC3);
  cv::Mat r = resize_long_side(tall, 32, false);
  EXPECT_EQ(r.rows, 32);
  EXPECT_EQ(r.cols, 16);
}

TEST(Augment, FlipsMoveBoxesWithTheImage) {
  cv::Mat img(20, 40, CV_8UC3, cv::Scalar::all(0));
  std::vector<PixelBox> boxes = {{1, 2, 3, 12, 8}};
  flip_lr(img, boxes);
  EXPECT_FLOAT_EQ(boxes[0].x1, 28);
  EXPECT_FLOAT_EQ(boxes[0].x2, 38);
  flip_ud(img, boxes);
  EXPECT_FLOAT_EQ(boxes[0].y1, 12);
  EXPECT_FLOAT_EQ(boxes[0].y2, 17);
  EXPECT_EQ(boxes[0].cls, 1);
}

TEST(Augment, AffineBoxesAreClippedAndTinyOnesDropped) {
  // Scale 2 about the origin, shift by (10, 0), onto a 40x40 output.
  const cv::Matx23d m(2, 0, 10, 0, 2, 0);
  std::vector<PixelBox> boxes = {{0, 1, 1, 5, 5},       // -> [12, 2, 20, 10]
                                 {1, 14, 0, 30, 4},     // -> [38, 0, 70, 8] clipped to 2 px wide
                                 {2, 10, 10, 12, 30}};  // -> [30, 20, 34, 60] clipped to 20 of 40
  auto out = transform_boxes(boxes, m, 2.0, 40, 40);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_FLOAT_EQ(out[0].x1, 12);
  EXPECT_FLOAT_EQ(out[0].y2, 10);
  EXPECT_EQ(out[1].cls, 2);
  EXPECT_FLOAT_EQ(out[1].y2, 40);
}

TEST(Augment, MosaicPlacesFourImagesAroundTheCentre) {
  std::vector<cv::Mat> images;
  std::vector<std::vector<PixelBox>> boxes;
  for (int i = 0; i < 4; ++i) {
    images.emplace_back(32, 32, CV_8UC3, cv::Scalar::all(40 * (i + 1)));
    boxes.push_back({{i, 8, 8, 24, 24}});
  }
  Rng rng(3);
  std::vector<PixelBox> out;
  cv::Mat canvas = mosaic4(images, boxes, 32, out, rng);
  EXPECT_EQ(canvas.rows, 64);
  EXPECT_EQ(canvas.cols, 64);
  ASSERT_GE(out.size(), 1u);
  for (const auto& b : out) {
    EXPECT_GE(b.x1, 0);
    EXPECT_LE(b.x2, 64);
    EXPECT_LT(b.x1, b.x2);
    EXPECT_LT(b.y1, b.y2);
  }
  // Same seed, same mosaic.
  Rng again(3);
  std::vector<PixelBox> out2;
  cv::Mat canvas2 = mosaic4(images, boxes, 32, out2, again);
  EXPECT_EQ(cv::norm(canvas, canvas2, cv::NORM_L1), 0.0);
  EXPECT_EQ(out2.size(), out.size());
}

TEST(Augment, HsvJitterChangesColoursButNotGray) {
  Rng rng(1);
  cv::Mat colour(4, 4, CV_8UC3, cv::Scalar(30, 120, 200));
  cv::Mat before = colour.clone();
  augment_hsv(colour, 0.015, 0.7, 0.4, rng);
  EXPECT_GT(cv::norm(colour, before, cv::NORM_L1), 0.0);
  cv::Mat same = before.clone();
  augment_hsv(same, 0, 0, 0, rng);
  EXPECT_EQ(cv::norm(same, before, cv::NORM_L1), 0.0);
}

}  // namespace
}  // namespace tandem::detect::detail
