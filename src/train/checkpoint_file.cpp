#include "tandem/train/checkpoint_file.h"

#include <ATen/ops/empty.h>
#include <c10/core/ScalarType.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string_view>

#include "tandem/core/error.h"

namespace tandem::train {

void throw_checkpoint_error(const std::string& path, std::string_view field,
                            const std::string& what) {
  throw CheckpointError(fmt::format("checkpoint '{}': field '{}': {}", path, field, what));
}

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr std::string_view kMagic = "TNDMCKPT";
// magic, version, world size, header length, header checksum.
constexpr size_t kPreambleSize = 8 + 4 + 4 + 8 + 8;

[[noreturn]] void fail(const std::string& path, std::string_view field, const std::string& what) {
  throw_checkpoint_error(path, field, what);
}

// The dtypes a checkpoint may hold, by the name c10::toString gives them.
constexpr std::array<c10::ScalarType, 10> kDtypes = {
    c10::kFloat, c10::kDouble, c10::kHalf, c10::kBFloat16, c10::kLong,
    c10::kInt,   c10::kShort,  c10::kChar, c10::kByte,     c10::kBool};

bool dtype_from_name(const std::string& name, c10::ScalarType& out) {
  for (auto t : kDtypes) {
    if (name == c10::toString(t)) {
      out = t;
      return true;
    }
  }
  return false;
}

template <typename T>
void put(std::string& out, T value) {
  char bytes[sizeof(T)];
  std::memcpy(bytes, &value, sizeof(T));  // little-endian hosts only (x86-64, aarch64)
  out.append(bytes, sizeof(T));
}

template <typename T>
T get(std::string_view in, size_t offset) {
  T value;
  std::memcpy(&value, in.data() + offset, sizeof(T));
  return value;
}

std::string hex64(uint64_t v) { return fmt::format("{:016x}", v); }

// One piece of the payload: a tensor's bytes or a blob.
struct Piece {
  std::string section;
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  const char* data = nullptr;
  size_t nbytes = 0;
  at::Tensor keep;  // owns `data` when it is a tensor
};

Piece tensor_piece(const std::string& section, const std::string& name, const at::Tensor& t) {
  Piece p;
  p.section = section;
  p.name = name;
  p.keep = t.detach().to(at::kCPU).contiguous();
  p.dtype = c10::toString(p.keep.scalar_type());
  p.shape = p.keep.sizes().vec();
  p.data = static_cast<const char*>(p.keep.data_ptr());
  p.nbytes = p.keep.nbytes();
  return p;
}

void write_fully(int fd, const char* data, size_t n, const std::string& path) {
  while (n > 0) {
    ssize_t w = ::write(fd, data, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) fail(path, "file", fmt::format("write failed: {}", std::strerror(errno)));
    data += w;
    n -= static_cast<size_t>(w);
  }
}

// Writes `pieces` of bytes to `tmp`, fsyncs, renames to `final_path`, fsyncs the directory.
void write_atomically(const std::string& dir, const std::string& tmp, const std::string& final_path,
                      const std::vector<std::pair<const char*, size_t>>& pieces) {
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail(tmp, "file", fmt::format("cannot create: {}", std::strerror(errno)));
  try {
    for (const auto& [data, n] : pieces) write_fully(fd, data, n, tmp);
    if (::fsync(fd) != 0) fail(tmp, "file", fmt::format("fsync failed: {}", std::strerror(errno)));
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (::close(fd) != 0) fail(tmp, "file", fmt::format("close failed: {}", std::strerror(errno)));
  if (::rename(tmp.c_str(), final_path.c_str()) != 0) {
    fail(final_path, "file", fmt::format("rename from '{}' failed: {}", tmp, std::strerror(errno)));
  }
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

// The fixed header of a file read whole: checks the magic, the version and
// the header's length and checksum.
struct Preamble {
  uint32_t version = 0;
  uint32_t world = 0;
  std::string_view header;  // the JSON text, within the file
};

Preamble read_preamble(const std::string& path, std::string_view file) {
  if (file.size() < kPreambleSize) {
    fail(path, file.size() < kMagic.size() ? "magic" : "header",
         fmt::format("the file is truncated: {} bytes, the fixed header alone is {}", file.size(),
                     kPreambleSize));
  }
  if (std::string_view(file.data(), kMagic.size()) != kMagic) {
    fail(path, "magic",
         fmt::format("expected \"{}\", found bytes {:02x}; this is not a Tandem checkpoint", kMagic,
                     fmt::join(std::vector<unsigned>(
                                   reinterpret_cast<const unsigned char*>(file.data()),
                                   reinterpret_cast<const unsigned char*>(file.data()) + 8),
                               " ")));
  }
  Preamble p;
  p.version = get<uint32_t>(file, 8);
  if (p.version < 1 || p.version > kCheckpointFormatVersion) {
    fail(path, "version",
         fmt::format("format version {} is not supported (this build reads versions 1 to {})",
                     p.version, kCheckpointFormatVersion));
  }
  p.world = get<uint32_t>(file, 12);
  const auto header_len = get<uint64_t>(file, 16);
  const auto header_sum = get<uint64_t>(file, 24);
  if (header_len > file.size() - kPreambleSize) {
    fail(path, "header",
         fmt::format("the file is truncated: the header needs {} bytes but {} follow", header_len,
                     file.size() - kPreambleSize));
  }
  const char* header_ptr = file.data() + kPreambleSize;
  if (XXH3_64bits(header_ptr, header_len) != header_sum) {
    fail(path, "header_checksum",
         fmt::format("the header's checksum is {} but the file says {}; the file is corrupt",
                     hex64(XXH3_64bits(header_ptr, header_len)), hex64(header_sum)));
  }
  p.header = std::string_view(header_ptr, header_len);
  return p;
}

// The header's step, sampler position, seed, world size, meta and sharding.
json read_header_fields(const std::string& path, const Preamble& p, Checkpoint& ckpt) {
  json header;
  std::string field = "header";
  try {
    header = json::parse(p.header);
    field = "step";
    ckpt.step = header.at("step").get<int64_t>();
    field = "epoch";
    ckpt.epoch = header.at("epoch").get<int64_t>();
    field = "samples_in_epoch";
    ckpt.samples_in_epoch = header.at("samples_in_epoch").get<int64_t>();
    field = "seed";
    ckpt.seed = header.at("seed").get<uint64_t>();
    field = "world_size";
    ckpt.world_size = header.at("world_size").get<int>();
    field = "meta";
    ckpt.meta = header.at("meta").get<std::map<std::string, std::string>>();
    field = "sharding";
    if (p.version >= 2 && !header.at("sharding").is_null()) {
      ckpt.sharding = header.at("sharding").dump();
    }
  } catch (const json::exception& e) {
    fail(path, field, fmt::format("unreadable: {}", e.what()));
  }
  if (ckpt.world_size < 1 || static_cast<uint32_t>(ckpt.world_size) != p.world) {
    fail(path, "world_size",
         fmt::format("the header says {} but the fixed header says {}; the file is corrupt",
                     ckpt.world_size, p.world));
  }
  if (ckpt.step < 0 || ckpt.epoch < 0 || ckpt.samples_in_epoch < 0) {
    fail(path, "step",
         fmt::format("negative step {}, epoch {} or samples_in_epoch {}", ckpt.step, ckpt.epoch,
                     ckpt.samples_in_epoch));
  }
  return header;
}

// Checks the payload's announced size and checksum; returns its size.
uint64_t check_payload(const std::string& path, const json& header, const char* payload,
                       size_t payload_have) {
  uint64_t payload_size = 0;
  std::string checksum_text;
  std::string field;
  try {
    field = "payload_size";
    payload_size = header.at("payload_size").get<uint64_t>();
    field = "payload_checksum";
    checksum_text = header.at("payload_checksum").get<std::string>();
  } catch (const json::exception& e) {
    fail(path, field, fmt::format("unreadable: {}", e.what()));
  }
  if (payload_size != payload_have) {
    fail(path, "payload_size",
         fmt::format("the header announces {} payload bytes but the file holds {}; the file is {}",
                     payload_size, payload_have,
                     payload_have < payload_size ? "truncated" : "corrupt"));
  }
  const std::string actual = hex64(XXH3_64bits(payload, payload_size));
  if (actual != checksum_text) {
    fail(path, "checksum",
         fmt::format("the payload's XXH3-64 checksum is {} but the header says {}; the file is "
                     "corrupt, resume from an earlier checkpoint",
                     actual, checksum_text));
  }
  return payload_size;
}

// One section's tensor: dtype, shape and byte count checked against the payload.
at::Tensor section_tensor(const std::string& path, const std::string& field,
                          const std::string& dtype_name, const std::vector<int64_t>& shape,
                          const char* data, uint64_t nbytes, uint64_t payload_size) {
  c10::ScalarType dtype;
  if (!dtype_from_name(dtype_name, dtype)) {
    fail(path, field, fmt::format("unknown dtype '{}'", dtype_name));
  }
  uint64_t numel = 1;
  for (int64_t d : shape) {
    if (d < 0 || (d > 0 && numel > payload_size / static_cast<uint64_t>(d) + 1)) {
      fail(path, field, fmt::format("invalid shape [{}]", fmt::join(shape, ", ")));
    }
    numel *= static_cast<uint64_t>(d);
  }
  if (numel * c10::elementSize(dtype) != nbytes) {
    fail(path, field,
         fmt::format("shape [{}] of {} needs {} bytes but the section has {}",
                     fmt::join(shape, ", "), dtype_name, numel * c10::elementSize(dtype), nbytes));
  }
  at::Tensor t = at::empty(shape, at::TensorOptions().dtype(dtype));
  if (nbytes > 0) std::memcpy(t.data_ptr(), data, nbytes);
  return t;
}

// The sections of the payload into `ckpt`, each bounds-checked.
void read_sections(const std::string& path, uint32_t version, const json& header,
                   const char* payload, uint64_t payload_size, Checkpoint& ckpt) {
  std::string field = "sections";
  try {
    for (const auto& s : header.at("sections")) {
      field = "sections";
      const auto section = s.at("section").get<std::string>();
      const auto name = s.at("name").get<std::string>();
      field = fmt::format("{} '{}'", section, name);
      const auto dtype_name = s.at("dtype").get<std::string>();
      const auto shape = s.at("shape").get<std::vector<int64_t>>();
      const auto offset = s.at("offset").get<uint64_t>();
      const auto nbytes = s.at("nbytes").get<uint64_t>();
      if (offset > payload_size || nbytes > payload_size - offset) {
        fail(path, field,
             fmt::format("bytes [{}, +{}) lie outside the {}-byte payload", offset, nbytes,
                         payload_size));
      }
      const char* data = payload + offset;
      if (section == "optimizer") {
        ckpt.optimizer_state.assign(data, nbytes);
        continue;
      }
      at::Tensor t = section_tensor(path, field, dtype_name, shape, data, nbytes, payload_size);
      if (section == "parameter") {
        ckpt.parameters.emplace_back(name, std::move(t));
      } else if (section == "buffer") {
        ckpt.buffers.emplace_back(name, std::move(t));
      } else if (section == "rng") {
        ckpt.rng_state = std::move(t);
      } else if (section == "shard" && version >= 2) {
        ckpt.shards.emplace_back(name, std::move(t));
      } else {
        fail(path, field, fmt::format("unknown section kind '{}'", section));
      }
    }
  } catch (const json::exception& e) {
    fail(path, field, fmt::format("unreadable: {}", e.what()));
  }
}

// A checkpoint as its file lays it out: the fixed header and the JSON
// header, then the payload's pieces (pointing into `ckpt`'s tensors, or into
// contiguous CPU copies the pieces own).
struct Encoded {
  std::string head;
  std::vector<Piece> pieces;
};

Encoded encode_parts(const Checkpoint& ckpt) {
  std::vector<Piece> pieces;
  for (const auto& [n, t] : ckpt.parameters) pieces.push_back(tensor_piece("parameter", n, t));
  for (const auto& [n, t] : ckpt.buffers) pieces.push_back(tensor_piece("buffer", n, t));
  if (ckpt.rng_state.defined()) pieces.push_back(tensor_piece("rng", "cpu", ckpt.rng_state));
  for (const auto& [n, t] : ckpt.shards) pieces.push_back(tensor_piece("shard", n, t));
  if (!ckpt.optimizer_state.empty()) {
    Piece p;
    p.section = "optimizer";
    p.name = "state";
    p.dtype = "bytes";
    p.data = ckpt.optimizer_state.data();
    p.nbytes = ckpt.optimizer_state.size();
    pieces.push_back(std::move(p));
  }

  XXH3_state_t* state = XXH3_createState();
  XXH3_64bits_reset(state);
  json sections = json::array();
  uint64_t offset = 0;
  for (const auto& p : pieces) {
    sections.push_back({{"section", p.section},
                        {"name", p.name},
                        {"dtype", p.dtype},
                        {"shape", p.shape},
                        {"offset", offset},
                        {"nbytes", p.nbytes}});
    XXH3_64bits_update(state, p.data, p.nbytes);
    offset += p.nbytes;
  }
  const uint64_t payload_checksum = XXH3_64bits_digest(state);
  XXH3_freeState(state);

  json header = {{"step", ckpt.step},
                 {"epoch", ckpt.epoch},
                 {"samples_in_epoch", ckpt.samples_in_epoch},
                 {"seed", ckpt.seed},
                 {"world_size", ckpt.world_size},
                 {"meta", ckpt.meta},
                 {"sharding", ckpt.sharding.empty() ? json(nullptr) : json::parse(ckpt.sharding)},
                 {"payload_size", offset},
                 {"payload_checksum", hex64(payload_checksum)},
                 {"sections", sections}};
  const std::string header_text = header.dump();
  Encoded e;
  e.head.assign(kMagic);
  put<uint32_t>(e.head, kCheckpointFormatVersion);
  put<uint32_t>(e.head, static_cast<uint32_t>(ckpt.world_size));
  put<uint64_t>(e.head, header_text.size());
  put<uint64_t>(e.head, XXH3_64bits(header_text.data(), header_text.size()));
  e.head.append(header_text);
  e.pieces = std::move(pieces);
  return e;
}

}  // namespace

std::string write_checkpoint(const std::string& dir, const Checkpoint& ckpt) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail(dir, "directory", fmt::format("cannot create: {}", ec.message()));
  const std::string name = fmt::format("step-{}.ckpt", ckpt.step);
  const std::string path = (fs::path(dir) / name).string();
  write_checkpoint_file(path, ckpt);
  write_latest(dir, name);
  return path;
}

void write_latest(const std::string& dir, const std::string& name) {
  const std::string latest_text = name + "\n";
  write_atomically(dir, (fs::path(dir) / "latest.tmp").string(),
                   (fs::path(dir) / "latest").string(), {{latest_text.data(), latest_text.size()}});
}

void write_checkpoint_file(const std::string& path, const Checkpoint& ckpt) {
  const std::string dir = fs::path(path).parent_path().string();
  const Encoded e = encode_parts(ckpt);
  std::vector<std::pair<const char*, size_t>> bytes;
  bytes.emplace_back(e.head.data(), e.head.size());
  for (const auto& p : e.pieces) bytes.emplace_back(p.data, p.nbytes);
  write_atomically(dir.empty() ? "." : dir, path + ".tmp", path, bytes);
}

std::string encode_checkpoint(const Checkpoint& ckpt) {
  const Encoded e = encode_parts(ckpt);
  size_t total = e.head.size();
  for (const auto& p : e.pieces) total += p.nbytes;
  std::string out;
  out.reserve(total);
  out.append(e.head);
  for (const auto& p : e.pieces) out.append(p.data, p.nbytes);
  return out;
}

Checkpoint decode_checkpoint(std::string_view bytes, const std::string& source) {
  const Preamble p = read_preamble(source, bytes);
  Checkpoint ckpt;
  ckpt.path = source;
  const json header = read_header_fields(source, p, ckpt);
  const size_t payload_start = kPreambleSize + p.header.size();
  const char* payload = bytes.data() + payload_start;
  const uint64_t payload_size =
      check_payload(source, header, payload, bytes.size() - payload_start);
  read_sections(source, p.version, header, payload, payload_size, ckpt);
  return ckpt;
}

Checkpoint read_checkpoint(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, "file", "cannot open it");
  std::string file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) fail(path, "file", "read failed");
  return decode_checkpoint(file, path);
}

std::optional<std::string> find_latest_checkpoint(const std::string& dir) {
  const std::string latest = (fs::path(dir) / "latest").string();
  std::error_code ec;
  if (!fs::exists(latest, ec)) {
    if (ec && ec != std::errc::no_such_file_or_directory) {
      fail(latest, "latest", fmt::format("cannot be inspected: {}", ec.message()));
    }
    return std::nullopt;
  }
  std::ifstream in(latest);
  if (!in) fail(latest, "latest", fmt::format("cannot be read: {}", std::strerror(errno)));
  std::string name;
  std::getline(in, name);
  if (name.empty() || name.find('/') != std::string::npos) {
    fail(latest, "latest", fmt::format("'{}' is not a checkpoint name", name));
  }
  return (fs::path(dir) / name).string();
}

std::string latest_checkpoint(const std::string& dir) {
  auto path = find_latest_checkpoint(dir);
  if (!path) {
    fail((fs::path(dir) / "latest").string(), "latest",
         "no checkpoint to resume from (the file does not exist); --resume without =require "
         "starts fresh when there is none, or give the --checkpoint-dir of an earlier run");
  }
  return *path;
}

Checkpoint load_latest(const std::string& dir) { return read_checkpoint(latest_checkpoint(dir)); }

}  // namespace tandem::train
