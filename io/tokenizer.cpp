#include "io/tokenizer.hpp"

#include <sentencepiece_processor.h>

#include <algorithm>
#include <fstream>
#include <iterator>

#include "io/detail/h5.hpp"
#include "io/error.hpp"

namespace lpurt::io {

using detail::check;
using detail::Handle;

namespace {

/// "64 MiB" for the size bound in messages.
std::string mib_text(int64_t bytes) { return std::to_string(bytes >> 20) + " MiB"; }

/// The library's reason, for the end of a message: "(sentencepiece: Out of range: Invalid id: 2000)".
std::string reason(const sentencepiece::util::Status& status) {
  std::string text = status.ToString();
  while (!text.empty() && (text.back() == ' ' || text.back() == '\n')) text.pop_back();
  return " (sentencepiece: " + text + ")";
}

}  // namespace

Tokenizer::Tokenizer(std::string serialized, std::string source)
    : serialized_(std::move(serialized)),
      source_(std::move(source)),
      processor_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {
  if (serialized_.empty()) throw FileError(source_ + ": is empty, expected a SentencePiece model (tokenizer.model)");
  const auto status = processor_->LoadFromSerializedProto(serialized_);
  if (!status.ok()) throw FileError(source_ + ": not a SentencePiece model (tokenizer.model)" + reason(status));
  // A model without pieces could encode nothing; vocab_size() >= 1 holds from here on.
  if (processor_->GetPieceSize() < 1) throw FileError(source_ + ": a SentencePiece model without pieces");
}

Tokenizer Tokenizer::from_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw FileError(path + ": cannot open (no such file or not readable)");
  const std::streamoff size = in.tellg();
  if (size < 0) throw FileError(path + ": cannot read its size");
  if (size > max_tokenizer_bytes)
    throw FileError(path + ": is " + std::to_string(size) +
                    " bytes; a SentencePiece model (tokenizer.model) is at most " + mib_text(max_tokenizer_bytes));
  std::string bytes(static_cast<std::size_t>(size), '\0');
  in.seekg(0);
  if (!in.read(bytes.data(), size)) throw FileError(path + ": cannot read");
  return Tokenizer(std::move(bytes), path);
}

Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

int64_t Tokenizer::vocab_size() const { return processor_->GetPieceSize(); }

int32_t Tokenizer::bos_id() const { return processor_->bos_id(); }

void Tokenizer::check_fits(int64_t model_vocab_size, const std::string& model_name) const {
  if (vocab_size() <= model_vocab_size) return;
  throw FileError(source_ + ": the tokenizer's vocabulary has " + std::to_string(vocab_size()) + " pieces but " +
                  model_name + " has vocab_size " + std::to_string(model_vocab_size) +
                  " (a tokenizer for another model?)");
}

std::vector<int32_t> Tokenizer::encode(const std::string& text) const {
  std::vector<int> pieces;
  const auto status = processor_->Encode(text, &pieces);
  if (!status.ok()) throw FileError(source_ + ": cannot encode the prompt text" + reason(status));
  std::vector<int32_t> ids;
  ids.reserve(pieces.size() + 1);
  if (bos_id() >= 0) ids.push_back(bos_id());
  ids.insert(ids.end(), pieces.begin(), pieces.end());
  return ids;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::vector<int> known;
  known.reserve(ids.size());
  std::copy_if(ids.begin(), ids.end(), std::back_inserter(known),
               [&](int32_t id) { return id >= 0 && id < vocab_size(); });
  std::string text;
  const auto status = processor_->Decode(known, &text);
  if (!status.ok()) throw FileError(source_ + ": cannot decode the generated tokens" + reason(status));
  return text;
}

std::optional<Tokenizer> read_embedded_tokenizer(const std::string& model_path) {
  Handle file = detail::open_file_read(model_path);
  detail::check_hard_links(file.get(), model_path);  // before a path is followed
  if (!detail::link_exists(file.get(), tokenizer_dataset)) return std::nullopt;
  const std::string name = model_path + ": dataset " + tokenizer_dataset;
  Handle ds = detail::open_dataset(file.get(), tokenizer_dataset, model_path);
  const detail::Dtype dtype = detail::dataset_dtype(ds.get());
  if (dtype != detail::Dtype::uint8)
    throw FileError(name + " has dtype " + detail::dtype_name(dtype) +
                    ", expected uint8 (the bytes of a tokenizer.model)");
  const std::vector<hsize_t> dims = detail::dataset_dims(ds.get());
  if (dims.size() != 1 || dims[0] < 1 || dims[0] > static_cast<hsize_t>(max_tokenizer_bytes))
    throw FileError(name + " must be 1-D with 1 .. " + std::to_string(max_tokenizer_bytes) + " bytes (" +
                    mib_text(max_tokenizer_bytes) + "), got " + std::to_string(dims.size()) + "-D" +
                    (dims.size() == 1 ? " with " + std::to_string(dims[0]) + " bytes" : std::string()));
  std::string bytes(static_cast<std::size_t>(dims[0]), '\0');
  check(H5Dread(ds.get(), H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, bytes.data()),
        name + ": cannot read it: the file is corrupt (a chunk fails its checksum, or the file is truncated)");
  return Tokenizer(std::move(bytes), model_path + ":" + tokenizer_dataset);
}

void write_embedded_tokenizer(const std::string& model_path, const Tokenizer& tokenizer, int64_t model_vocab_size) {
  tokenizer.check_fits(model_vocab_size, model_path);
  Handle file = detail::open_file_read_write(model_path);
  if (detail::link_exists(file.get(), tokenizer_dataset))
    throw FileError(model_path + ": already has a tokenizer (" + tokenizer_dataset + ")", ExitCode::io);
  const std::string& bytes = tokenizer.serialized();
  const hsize_t n = bytes.size();
  Handle group = detail::create_group(file.get(), "tokenizer", model_path);
  Handle space(check(H5Screate_simple(1, &n, nullptr), "H5Screate_simple"), H5Sclose);
  // Chunks of at most 1 MiB, each with a Fletcher32 checksum, as the tensors have: a flipped bit fails
  // the read instead of silently changing a piece.
  Handle dcpl(check(H5Pcreate(H5P_DATASET_CREATE), "H5Pcreate"), H5Pclose);
  const hsize_t chunk = std::min<hsize_t>(n, hsize_t{1} << 20);
  check(H5Pset_chunk(dcpl.get(), 1, &chunk), model_path + ": chunking " + tokenizer_dataset);
  check(H5Pset_fletcher32(dcpl.get()), model_path + ": checksum filter for " + tokenizer_dataset);
  Handle ds(
      check(H5Dcreate2(group.get(), "sentencepiece", H5T_STD_U8LE, space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT),
            model_path + ": cannot create dataset " + tokenizer_dataset),
      H5Dclose);
  check(H5Dwrite(ds.get(), H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, bytes.data()),
        model_path + ": cannot write " + tokenizer_dataset);
  check(ds.close(), model_path + ": cannot close " + tokenizer_dataset + " after writing it");
  check(group.close(), model_path + ": cannot close /tokenizer");
  check(H5Fflush(file.get(), H5F_SCOPE_GLOBAL), model_path + ": cannot flush");
  check(file.close(), model_path + ": cannot close the file (its last writes failed)");
}

}  // namespace lpurt::io
