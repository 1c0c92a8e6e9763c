#pragma once
/// \file
/// A SentencePiece tokenizer (the `tokenizer.model` of Llama 2, Mistral, Mixtral and others) and its
/// place in a model file: the serialized model, byte for byte, as the uint8 dataset
/// /tokenizer/sentencepiece [n_bytes], chunked with HDF5's Fletcher32 checksum like every tensor.
/// Encoding is deterministic (same bytes, same library), so every rank can encode a prompt itself.
///
/// Example usage:
/// \code
///   Tokenizer t = Tokenizer::from_file("tokenizer.model");        // throws FileError if it is not one
///   write_embedded_tokenizer("model.h5", t, cfg.vocab_size);      // refuses a vocabulary above the model's
///   std::optional<Tokenizer> back = read_embedded_tokenizer("model.h5");   // nullopt: the file has none
///   std::vector<int32_t> ids = back->encode("Hello");             // [BOS, ...] when the model defines BOS
///   std::string text = back->decode(ids);
/// \endcode

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace lpurt::io {

/// Where a model file keeps its SentencePiece tokenizer.
inline constexpr const char* tokenizer_dataset = "/tokenizer/sentencepiece";
/// The largest serialized tokenizer lpurt reads: real ones are far smaller (Llama 2's is 0.5 MB, a
/// 256,000-piece vocabulary about 4 MB), and a bound keeps a wrong file (or a corrupt dataset's shape)
/// from being read into memory whole.
inline constexpr int64_t max_tokenizer_bytes = int64_t{64} << 20;

class Tokenizer {
 public:
  /// Loads a serialized SentencePiece model (the bytes of a tokenizer.model); `source` names it in
  /// errors (a file, or a model file's dataset). Throws FileError naming `source` if the bytes are not a
  /// SentencePiece model.
  Tokenizer(std::string serialized, std::string source);
  /// Reads and loads a tokenizer.model file; throws FileError naming it.
  static Tokenizer from_file(const std::string& path);
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  /// Pieces in the vocabulary: the ids it knows are 0 .. vocab_size() - 1.
  int64_t vocab_size() const;
  /// The beginning-of-sequence id, or -1 if the model defines none.
  int32_t bos_id() const;
  /// The file or dataset it was loaded from.
  const std::string& source() const { return source_; }
  /// The serialized model, as loaded.
  const std::string& serialized() const { return serialized_; }
  /// Throws FileError naming the tokenizer, `model_name` and both sizes unless every id the tokenizer
  /// can produce is a row of a model with `model_vocab_size` rows.
  void check_fits(int64_t model_vocab_size, const std::string& model_name) const;
  /// The ids of `text` (UTF-8). When the model defines BOS, it comes first, as Hugging Face's
  /// LlamaTokenizer (add_bos_token) and SentencePiece's own `bos` option do: Llama-family models were
  /// trained with it and expect it.
  std::vector<int32_t> encode(const std::string& text) const;
  /// The text of `ids` (SentencePiece's detokenization: control pieces such as BOS and EOS give nothing).
  /// Ids the tokenizer does not know (a model's embedding is often padded past its tokenizer's
  /// vocabulary) give nothing either, as in Hugging Face's fast tokenizers.
  std::string decode(const std::vector<int32_t>& ids) const;

 private:
  std::string serialized_;
  std::string source_;
  std::unique_ptr<sentencepiece::SentencePieceProcessor> processor_;
};

/// The tokenizer embedded in the model file at `model_path`, or nullopt if it has no
/// /tokenizer/sentencepiece. Throws FileError naming the file and dataset if it is not a 1-D uint8
/// dataset of 1 .. max_tokenizer_bytes bytes, fails its checksum, or does not load.
std::optional<Tokenizer> read_embedded_tokenizer(const std::string& model_path);

/// Adds `tokenizer` to the model file at `model_path` (written and closed, e.g. by ModelWriter, and not
/// yet holding a tokenizer) as /tokenizer/sentencepiece. Checks first that it fits a model of
/// `model_vocab_size` (Tokenizer::check_fits), so no file gets a tokenizer it cannot use.
void write_embedded_tokenizer(const std::string& model_path, const Tokenizer& tokenizer, int64_t model_vocab_size);

}  // namespace lpurt::io
