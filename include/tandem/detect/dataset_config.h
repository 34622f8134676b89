// The dataset YAML of the Ultralytics layout, and the file lists it names.
//
//   path: /data/shapes        # root; relative to the YAML's folder; default: that folder
//   train: images/train       # a folder, a .txt list of image paths, or a list of either
//   val: images/val
//   test: images/test         # optional
//   names: [circle, square]   # or a map {0: circle, 1: square}
//
// Labels sit beside the images: the last `images` component of an image path
// becomes `labels` and the extension `.txt` (images/train/a.jpg ->
// labels/train/a.txt). Thread-safe: plain functions over plain values.
#pragma once

#include <string>
#include <vector>

namespace tandem::detect {

struct DatasetConfig {
  std::string yaml_path;           // the file it was read from
  std::string root;                // `path`, resolved to an absolute folder
  std::vector<std::string> train;  // entries as written, resolved against root
  std::vector<std::string> val;
  std::vector<std::string> test;   // empty when the YAML has no `test`
  std::vector<std::string> names;  // class names; the index is the class id
};

// Which list of DatasetConfig a data set reads.
enum class Split { kTrain, kVal, kTest };

// Parses "train", "val" or "test". Throws tandem::InvalidArgument otherwise.
Split parse_split(const std::string& text);
const char* split_name(Split split);

// Reads and validates the YAML at `yaml_path`. Throws tandem::InvalidArgument
// naming the file and the key when it is unreadable, `train`, `val` or
// `names` is missing, `names` is empty, or a map of names skips a class id.
DatasetConfig load_dataset_config(const std::string& yaml_path);

// The image files of `split`, sorted and without duplicates: every image
// under a folder entry (recursively), every line of a .txt entry (relative
// lines resolve against the list's folder, as Ultralytics does with "./"),
// or a single image file. Throws tandem::InvalidArgument naming the YAML and
// the entry when an entry does not exist or the split has no images.
std::vector<std::string> list_image_files(const DatasetConfig& config, Split split);

// The label file of an image: the last "images" folder in its path becomes
// "labels" and the extension ".txt". Without an "images" folder, the .txt
// sits beside the image.
std::string label_path_for(const std::string& image_path);

}  // namespace tandem::detect
