// tokenizer: byte-level BPE, token-for-token identical to tiktoken for gpt2, cl100k_base and o200k_base.
//
// Encoding is two stages, as in tiktoken:
//   1. pre-tokenization (pretokenize.h): the text is split into pieces by the encoding's regex, done
//      here by a hand-written scanner over generated Unicode tables;
//   2. byte-pair merging inside each piece: repeatedly merge the adjacent pair whose concatenation has
//      the lowest rank, until no pair is in the vocabulary.
// Decoding concatenates each id's bytes; decode(encode(b)) == b for any bytes, invalid UTF-8 included.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "pretokenize.h"

namespace llmq {

class Tokenizer {
  public:
    // One of the bundled encodings: "gpt2", "cl100k_base", "o200k_base", loaded from data_dir
    // (the repository's data/tokenizers/ by default). Throws Error naming the encoding or file.
    static Tokenizer from_encoding(const std::string& name, const std::string& data_dir = "");
    // Any supported vocabulary file, format detected from name and content: GPT-2 encoder.json (vocab.bpe
    // beside it), tiktoken .tiktoken rank files, tiktoken JSON (pat_str, special_tokens, bpe_ranks),
    // HF tokenizer.json (byte-level BPE), and this project's own trained-vocabulary format.
    static Tokenizer from_file(const std::string& path);

    // Special tokens such as <|endoftext|> are plain text unless allow_special is set.
    std::vector<uint32_t> encode(std::string_view text, bool allow_special = false) const;
    // Appends to out (no allocation per call in the hot loop).
    void encode_into(std::string_view text, std::vector<uint32_t>& out, bool allow_special = false) const;
    std::string decode(const uint32_t* ids, size_t n) const;
    std::string decode(const std::vector<uint32_t>& ids) const { return decode(ids.data(), ids.size()); }
    // The bytes of one token (throws Error for an id past the vocabulary).
    std::string_view token_bytes(uint32_t id) const;

    uint32_t vocab_size() const;      // ids are < vocab_size(), specials included
    uint32_t eot_id() const;          // <|endoftext|>'s id
    const std::string& name() const;  // encoding name or file path

    // internals are the implementation's (tools/tokenizer.cpp)
  private:
    struct Impl;
    std::shared_ptr<const Impl> impl_;
};

// The repository's data/ directory as seen from the running program: $LLMQ_DATA if set, else the
// directory containing the executable's "data/", else "./data".
std::string default_data_dir();

}  // namespace llmq
