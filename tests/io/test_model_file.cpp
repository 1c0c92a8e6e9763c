#include <gtest/gtest.h>
#include <hdf5.h>

#include <cstdio>
#include <filesystem>
#include <limits>
#include <unistd.h>

#include "io/error.hpp"
#include "io/model_file.hpp"
#include "io/result_file.hpp"

using namespace lpurt;
using chip::TensorId;
using chip::TensorKind;

namespace {

class TempDir {
 public:
  TempDir() : path_(std::filesystem::temp_directory_path() / ("lpurt_io_" + std::to_string(::getpid()))) {
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

}  // namespace

TEST(ModelFile, RoundTripsTheGeneratorsValuesExactly) {
  TempDir dir;
  const auto cfg = chip::model_preset("tiny-mixtral");
  io::SyntheticModel synthetic(cfg, 7, "tiny-mixtral");
  io::write_model_file(dir.file("m.h5"), synthetic, false, false);
  auto file = io::ModelFile::open(dir.file("m.h5"));
  EXPECT_TRUE(file->has_weights());
  EXPECT_EQ(file->config().n_experts, 4);
  EXPECT_EQ(file->config().hidden_size, cfg.hidden_size);
  for (const TensorId& id : chip::model_tensors(cfg)) {
    const auto s = chip::tensor_shape(cfg, id);
    if (chip::is_quantized_matrix(id.kind)) {
      std::vector<int8_t> a(static_cast<std::size_t>(s.rows * s.cols)), b(a.size());
      file->read_weight(id, 0, s.rows, 0, s.cols, a.data());
      synthetic.read_weight(id, 0, s.rows, 0, s.cols, b.data());
      EXPECT_EQ(a, b) << chip::tensor_path(id);
    } else {
      std::vector<float> a(static_cast<std::size_t>(s.rows * s.cols)), b(a.size());
      file->read_floats(id, 0, s.rows, a.data());
      synthetic.read_floats(id, 0, s.rows, b.data());
      EXPECT_EQ(a, b) << chip::tensor_path(id);
    }
  }
}

TEST(ModelFile, HyperslabReadsExactlyTheRequestedBlock) {
  TempDir dir;
  const auto cfg = chip::model_preset("tiny");
  io::SyntheticModel synthetic(cfg, 3, "tiny");
  io::write_model_file(dir.file("m.h5"), synthetic, false, false);
  auto file = io::ModelFile::open(dir.file("m.h5"));
  const TensorId wo{TensorKind::wo, 2};
  std::vector<int8_t> block(static_cast<std::size_t>(10 * 16)), full(static_cast<std::size_t>(cfg.hidden_size * cfg.q_size()));
  file->read_weight(wo, 5, 15, 32, 48, block.data());
  EXPECT_EQ(file->bytes_read(), 160);
  synthetic.read_weight(wo, 0, cfg.hidden_size, 0, cfg.q_size(), full.data());
  for (int r = 0; r < 10; ++r)
    for (int c = 0; c < 16; ++c)
      EXPECT_EQ(block[static_cast<std::size_t>(r * 16 + c)], full[static_cast<std::size_t>((5 + r) * cfg.q_size() + 32 + c)]);
}

TEST(ModelFile, ConfigOnlyFileHasNoWeightsAndSaysSoWhenAskedForThem) {
  TempDir dir;
  io::SyntheticModel synthetic(chip::model_preset("llama2-70b"), 1, "llama2-70b");
  io::write_model_file(dir.file("c.h5"), synthetic, true, false);
  EXPECT_LT(std::filesystem::file_size(dir.file("c.h5")), 100'000u);
  auto file = io::ModelFile::open(dir.file("c.h5"));
  EXPECT_FALSE(file->has_weights());
  EXPECT_EQ(file->config().n_layers, 80);
  float x = 0;
  EXPECT_NE(error_of([&] { file->read_floats({TensorKind::final_norm}, 0, 1, &x); }).find("configuration"), std::string::npos);
}

TEST(ModelFile, ErrorsNameTheFileAndWhatWasExpected) {
  TempDir dir;
  io::SyntheticModel synthetic(chip::model_preset("tiny"), 1, "tiny");
  const std::string good = dir.file("good.h5");
  io::write_model_file(good, synthetic, false, false);

  EXPECT_NE(error_of([&] { io::ModelFile::open(dir.file("missing.h5")); }).find("missing.h5"), std::string::npos);

  {  // a format_version from the future
    const std::string p = dir.file("v3.h5");
    std::filesystem::copy_file(good, p);
    hid_t f = H5Fopen(p.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t a = H5Aopen(f, "format_version", H5P_DEFAULT);
    const int64_t three = 3;
    H5Awrite(a, H5T_NATIVE_INT64, &three);
    H5Aclose(a);
    H5Fclose(f);
    EXPECT_NE(error_of([&] { io::ModelFile::open(p); }).find("format_version is 3, expected 1 .. 2"), std::string::npos);
  }
  {  // missing dataset
    const std::string p = dir.file("nodata.h5");
    std::filesystem::copy_file(good, p);
    hid_t f = H5Fopen(p.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    H5Ldelete(f, "/layers/2/wv/scale", H5P_DEFAULT);
    H5Fclose(f);
    EXPECT_NE(error_of([&] { io::ModelFile::open(p); }).find("missing dataset /layers/2/wv/scale"), std::string::npos);
  }
  {  // wrong shape
    const std::string p = dir.file("shape.h5");
    std::filesystem::copy_file(good, p);
    hid_t f = H5Fopen(p.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    H5Ldelete(f, "/final_norm", H5P_DEFAULT);
    const hsize_t dims[1] = {7};
    hid_t space = H5Screate_simple(1, dims, nullptr);
    hid_t ds = H5Dcreate2(f, "/final_norm", H5T_IEEE_F32LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dclose(ds);
    H5Sclose(space);
    H5Fclose(f);
    const std::string m = error_of([&] { io::ModelFile::open(p); });
    EXPECT_NE(m.find("/final_norm has shape [7], expected [128]"), std::string::npos) << m;
  }
}

TEST(ResultFile, IsWrittenAtomicallyAndNotOverwrittenWithoutForce) {
  TempDir dir;
  io::RunResult r;
  r.batch = 2;
  r.prompt = {1, 2, 3, 4};
  r.tokens = {3, 1, 0, 2, 2, 2};
  r.summary.set("chips", int64_t{1}).set("ttft_s", 1.5e-6).set("model", std::string("tiny"));
  r.metrics.push_back({"chip_sram_bytes", "bytes", {123.0}});
  const std::string p = dir.file("r.h5");
  auto write = [&](bool force) {
    io::ResultWriter out(p, force, 2, 3, 4);
    for (int64_t b = 0; b < 2; ++b)
      for (int64_t k = 2; k >= 0; --k) {  // any order: each row has its place
        const float row[4] = {static_cast<float>(b), static_cast<float>(k), -1.0f, 9.0f};
        out.write_logits(b, k, row);
      }
    out.commit(r);
  };
  write(false);
  EXPECT_TRUE(std::filesystem::exists(p));
  EXPECT_NE(error_of([&] { write(false); }).find("--force"), std::string::npos);
  EXPECT_NO_THROW(write(true));
  {
    const hid_t f = H5Fopen(p.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    ASSERT_GE(f, 0);
    const hid_t ds = H5Dopen2(f, "logits", H5P_DEFAULT);
    const hid_t space = H5Dget_space(ds);
    hsize_t dims[3] = {};
    ASSERT_EQ(H5Sget_simple_extent_ndims(space), 3);
    H5Sget_simple_extent_dims(space, dims, nullptr);
    EXPECT_EQ(dims[0], 2u);
    EXPECT_EQ(dims[1], 3u);
    EXPECT_EQ(dims[2], 4u);
    std::vector<float> logits(24);
    H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, logits.data());
    for (int b = 0; b < 2; ++b)
      for (int k = 0; k < 3; ++k) {
        const float* row = logits.data() + (b * 3 + k) * 4;
        EXPECT_EQ(row[0], static_cast<float>(b));
        EXPECT_EQ(row[1], static_cast<float>(k));
        EXPECT_EQ(row[3], 9.0f);
      }
    H5Sclose(space);
    H5Dclose(ds);
    H5Fclose(f);
  }
  for (const auto& entry : std::filesystem::directory_iterator(dir.file("")))
    EXPECT_EQ(entry.path().string().find(".tmp"), std::string::npos) << entry.path();
}

TEST(ResultFile, AnUncommittedWriterLeavesNothing) {
  TempDir dir;
  const std::string p = dir.file("r.h5");
  {
    io::ResultWriter out(p, false, 1, 2, 4);
    const float row[4] = {1, 2, 3, 4};
    out.write_logits(0, 0, row);
  }  // an error unwinding the run
  EXPECT_TRUE(std::filesystem::is_empty(dir.file("")));
}

TEST(Record, PrintsOneJsonObjectWithRoundTripDoubles) {
  io::Record r;
  r.set("chips", int64_t{8}).set("tpot_s", 0.1).set("model", std::string("a\"b"));
  EXPECT_EQ(r.to_json(), "{\"chips\":8,\"tpot_s\":0.1,\"model\":\"a\\\"b\"}");
}

TEST(Record, WritesValidJsonWhateverTheStringsHold) {
  io::Record r;
  r.set("bad\xff", std::string("\xc3(\x01\x7f")).set("nan", std::numeric_limits<double>::quiet_NaN());
  EXPECT_EQ(r.to_json(), "{\"bad\xEF\xBF\xBD\":\"\xEF\xBF\xBD(\\u0001\x7f\",\"nan\":null}");
}
