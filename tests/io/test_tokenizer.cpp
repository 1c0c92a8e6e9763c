#include <gtest/gtest.h>
#include <hdf5.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "io/error.hpp"
#include "io/model_file.hpp"
#include "io/tokenizer.hpp"

using namespace lpurt;

namespace {

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

/// Real SentencePiece models, trained by spm_train (Debian's `sentencepiece`) once for the suite from a
/// corpus of made-up words the test writes.
class SentencePieceTokenizer : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = std::filesystem::temp_directory_path() / ("lpurt_tokenizer_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
    const char* syllables[] = {"ka", "to", "ri", "mu", "se", "lo", "pa", "ne", "vi", "da", "gu", "ho", "zi"};
    uint64_t state = 0x9e3779b97f4a7c15ULL;
    auto next = [&](uint64_t n) {
      state ^= state << 13, state ^= state >> 7, state ^= state << 17;  // xorshift64
      return state % n;
    };
    std::ofstream corpus(file("corpus.txt"));
    for (int line = 0; line < 2000; ++line) {
      for (uint64_t w = 0, n_words = 3 + next(8); w < n_words; ++w) {
        for (uint64_t s = 0, n = 1 + next(3); s < n; ++s) corpus << syllables[next(std::size(syllables))];
        corpus << (w + 1 < n_words ? " " : "\n");
      }
    }
    corpus.close();
    train("bos", "--model_type=bpe --vocab_size=300");
    train("no_bos", "--model_type=unigram --vocab_size=200 --bos_id=-1");
  }
  static void TearDownTestSuite() { std::filesystem::remove_all(dir_); }

  static void train(const std::string& name, const std::string& options) {
    const std::string command = std::string(LPURT_SPM_TRAIN) + " --input=" + file("corpus.txt") +
                                " --model_prefix=" + file(name) + " " + options + " --minloglevel=2 >/dev/null 2>&1";
    ASSERT_EQ(std::system(command.c_str()), 0) << command;
  }
  static std::string file(const std::string& name) { return (dir_ / name).string(); }

  static std::filesystem::path dir_;
};
std::filesystem::path SentencePieceTokenizer::dir_;

}  // namespace

TEST_F(SentencePieceTokenizer, EncodesWithBosFirstAndDecodesBack) {
  const auto t = io::Tokenizer::from_file(file("bos.model"));
  EXPECT_EQ(t.vocab_size(), 300);
  EXPECT_EQ(t.bos_id(), 1);  // spm_train's default
  const std::string text = "kato rimu sezi lopa";
  const std::vector<int32_t> ids = t.encode(text);
  ASSERT_GE(ids.size(), 2u);
  EXPECT_EQ(ids.front(), 1);
  for (int32_t id : ids) EXPECT_TRUE(id >= 0 && id < 300) << id;
  EXPECT_EQ(t.decode(ids), text);  // BOS decodes to nothing
}

TEST_F(SentencePieceTokenizer, PrependsNothingWhenTheModelDefinesNoBos) {
  const auto t = io::Tokenizer::from_file(file("no_bos.model"));
  EXPECT_EQ(t.bos_id(), -1);
  const std::vector<int32_t> ids = t.encode("kato rimu");
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(t.decode(ids), "kato rimu");
  EXPECT_TRUE(t.encode("").empty());
}

TEST_F(SentencePieceTokenizer, DecodesIdsOutsideItsVocabularyToNothing) {
  const auto t = io::Tokenizer::from_file(file("bos.model"));
  const std::vector<int32_t> ids = t.encode("kato rimu");
  std::vector<int32_t> padded = {300, 1023, -1};
  padded.insert(padded.begin() + 1, ids.begin(), ids.end());
  EXPECT_EQ(t.decode(padded), t.decode(ids));
}

TEST_F(SentencePieceTokenizer, ChecksItFitsTheModelsVocabularyNamingBothSizes) {
  const auto t = io::Tokenizer::from_file(file("bos.model"));
  EXPECT_NO_THROW(t.check_fits(300, "m.h5"));
  const std::string m = error_of([&] { t.check_fits(299, "m.h5"); });
  EXPECT_NE(m.find("bos.model: the tokenizer's vocabulary has 300 pieces but m.h5 has vocab_size 299"),
            std::string::npos)
      << m;
}

TEST_F(SentencePieceTokenizer, IsEmbeddedInAModelFileByteForByte) {
  const auto t = io::Tokenizer::from_file(file("bos.model"));
  const auto cfg = chip::model_preset("tiny");
  io::SyntheticModel synthetic(cfg, 1, "tiny");
  const std::string with = file("with.h5"), without = file("without.h5");
  io::write_model_file(with, synthetic, true, true, {},
                       [&](const std::string& tmp) { io::write_embedded_tokenizer(tmp, t, cfg.vocab_size); });
  io::write_model_file(without, synthetic, true, true);
  const auto back = io::read_embedded_tokenizer(with);
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->serialized(), read_bytes(file("bos.model")));
  EXPECT_EQ(back->source(), with + ":/tokenizer/sentencepiece");
  EXPECT_EQ(back->encode("kato"), t.encode("kato"));
  EXPECT_FALSE(io::read_embedded_tokenizer(without).has_value());
  EXPECT_NO_THROW(io::ModelFile::open(with));  // the model reader accepts the extra group
  // A second tokenizer, or one that does not fit, is refused.
  EXPECT_NE(error_of([&] { io::write_embedded_tokenizer(with, t, cfg.vocab_size); }).find("already has a tokenizer"),
            std::string::npos);
  EXPECT_NE(error_of([&] { io::write_embedded_tokenizer(without, t, 100); }).find("has vocab_size 100"),
            std::string::npos);
  EXPECT_FALSE(io::read_embedded_tokenizer(without).has_value());
}

TEST_F(SentencePieceTokenizer, AFlippedByteInTheModelFileFailsItsChecksum) {
  const auto t = io::Tokenizer::from_file(file("bos.model"));
  const auto cfg = chip::model_preset("tiny");
  io::SyntheticModel synthetic(cfg, 1, "tiny");
  const std::string p = file("flipped.h5");
  io::write_model_file(p, synthetic, true, true, {},
                       [&](const std::string& tmp) { io::write_embedded_tokenizer(tmp, t, cfg.vocab_size); });
  std::string bytes = read_bytes(p);
  const std::string& model = t.serialized();
  const auto at = bytes.find(model.substr(model.size() / 2, 64));
  ASSERT_NE(at, std::string::npos);
  bytes[at + 10] = static_cast<char>(bytes[at + 10] ^ 0x20);
  write_bytes(p, bytes);
  const std::string m = error_of([&] { io::read_embedded_tokenizer(p); });
  EXPECT_NE(m.find(p + ": dataset /tokenizer/sentencepiece: cannot read it: the file is corrupt"), std::string::npos)
      << m;
}

TEST_F(SentencePieceTokenizer, RefusesADatasetOfAnotherTypeOrShape) {
  const auto cfg = chip::model_preset("tiny");
  io::SyntheticModel synthetic(cfg, 1, "tiny");
  const std::string p = file("wrong.h5");
  for (const auto& [type, rank, expected] :
       {std::tuple{H5T_STD_I32LE, 1, "has dtype int32, expected uint8"},
        std::tuple{H5T_STD_U8LE, 2, "must be 1-D with 1 .. 67108864 bytes (64 MiB), got 2-D"}}) {
    io::write_model_file(p, synthetic, true, true);
    const hid_t f = H5Fopen(p.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    ASSERT_GE(f, 0);
    const hid_t group = H5Gcreate2(f, "tokenizer", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    const hsize_t dims[2] = {4, 4};
    const hid_t space = H5Screate_simple(rank, dims, nullptr);
    const hid_t ds = H5Dcreate2(group, "sentencepiece", type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    const int32_t zeros[16] = {};
    H5Dwrite(ds, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, zeros);
    H5Dclose(ds);
    H5Sclose(space);
    H5Gclose(group);
    H5Fclose(f);
    const std::string m = error_of([&] { io::read_embedded_tokenizer(p); });
    EXPECT_NE(m.find(p + ": dataset /tokenizer/sentencepiece " + expected), std::string::npos) << m;
  }
}

TEST_F(SentencePieceTokenizer, RefusesBytesThatAreNoModelWithAnErrorNotACrash) {
  const std::string good = read_bytes(file("bos.model"));
  EXPECT_NE(error_of([] { io::Tokenizer(std::string(), "empty.model"); }).find("empty.model: is empty"),
            std::string::npos);
  const std::string m = error_of([] { io::Tokenizer(std::string(1000, '\x07'), "junk.model"); });
  EXPECT_NE(m.find("junk.model: not a SentencePiece model (tokenizer.model) (sentencepiece: "), std::string::npos) << m;
  EXPECT_NE(error_of([&] { io::Tokenizer::from_file(file("missing.model")); }).find("cannot open"), std::string::npos);
  // Truncations and flipped bytes: each either loads and then encodes and decodes, or is refused with
  // FileError; none may crash or hang the process.
  int attempts = 0, refused = 0, loaded = 0;
  auto attempt = [&](const std::string& bytes) {
    ++attempts;
    try {
      io::Tokenizer t(bytes, "damaged.model");
      t.decode(t.encode("kato rimu sezi"));
      ++loaded;
    } catch (const io::FileError&) {
      ++refused;
    }
  };
  for (std::size_t n = 0; n < good.size(); n += good.size() / 97 + 1) attempt(good.substr(0, n));
  uint64_t state = 12345;
  for (int i = 0; i < 300; ++i) {
    state ^= state << 13, state ^= state >> 7, state ^= state << 17;
    std::string bytes = good;
    bytes[state % bytes.size()] = static_cast<char>(state >> 56);
    attempt(bytes);
  }
  EXPECT_GT(refused, 50) << refused << " refused, " << loaded << " loaded";
  EXPECT_EQ(refused + loaded, attempts);  // nothing else was thrown
}
