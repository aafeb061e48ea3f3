// tokenizer: byte-level BPE, token-for-token identical to tiktoken for gpt2, cl100k_base and o200k_base.
//
// Encoding is two stages, as in tiktoken:
//   1. pre-tokenization (pretokenize.h): the text is split into pieces by the encoding's regex, done
//      here by a hand-written scanner over generated Unicode tables;
//   2. byte-pair merging inside each piece: repeatedly merge the adjacent pair whose concatenation has
//      the lowest rank, until no pair is in the vocabulary.
// Decoding concatenates each id's bytes; decode(encode(b)) == b for any bytes, invalid UTF-8 included.
//
// A token's RANK orders merges (lower merges first) and its ID is what encode returns; they are the
// same for tiktoken files, and differ only where a vocabulary file numbers tokens otherwise (HF, GPT-2
// encoder.json). Ids need not be contiguous: cl100k_base has no token 100256, vocab_size() is 100277.
//
// A Tokenizer is immutable once built and cheap to copy (copies share the tables), so one instance may
// encode from many threads at once. A default-constructed Tokenizer is empty: only assign to it.
// With allow_special, special tokens are matched exactly (the longest at each position) and the text
// between them is encoded as usual; HF added_tokens count as special tokens.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "pretokenize.h"

namespace llmq {

// Everything a byte-level BPE tokenizer is made of. The file loaders fill one; a trainer can too and
// hand it to Tokenizer::from_spec.
struct TokenizerSpec {
    std::string name;                                    // for messages and Tokenizer::name()
    PretokenPattern pattern = PretokenPattern::GPT2;
    std::vector<std::string> ranked_tokens;              // mergeable tokens' bytes, rank 0 first; all 256
                                                         // single bytes must be among them
    std::vector<uint32_t> ranked_ids;                    // id of each ranked token; empty: id = rank
    std::vector<std::pair<std::string, uint32_t>> special_tokens;  // (text, id), e.g. <|endoftext|>
    std::vector<std::pair<std::string, uint32_t>> extra_tokens;    // decodable, never produced by merging
    uint32_t vocab_size = 0;                             // 0: largest id + 1; else must be >= that
};

class Tokenizer {
  public:
    static constexpr uint32_t kNoToken = 0xFFFFFFFFu;

    // One of the bundled encodings: "gpt2", "cl100k_base", "o200k_base", loaded from
    // <data_dir>/tokenizers/tiktoken/<name>.json, data_dir being default_data_dir() when empty.
    // Throws Error naming the encoding or file.
    static Tokenizer from_encoding(const std::string& name, const std::string& data_dir = "");
    // Any supported vocabulary file, format detected from name and content: GPT-2 encoder.json (vocab.bpe
    // beside it; or vocab.bpe with encoder.json beside it), tiktoken .tiktoken rank files, tiktoken JSON
    // (pat_str, special_tokens, bpe_ranks; also this project's trained-vocabulary format), HF
    // tokenizer.json (byte-level BPE). Formats without a pattern use gpt2's unless the file name
    // contains "cl100k" or "o200k"; a .tiktoken file gets those encodings' special tokens by name, else
    // <|endoftext|> right after the last rank.
    static Tokenizer from_file(const std::string& path);
    // Builds a tokenizer from its parts; throws Error (naming spec.name) when they are inconsistent.
    static Tokenizer from_spec(const TokenizerSpec& spec);

    // Special tokens such as <|endoftext|> are plain text unless allow_special is set.
    std::vector<uint32_t> encode(std::string_view text, bool allow_special = false) const;
    // Appends to out (no allocation per call in the hot loop).
    void encode_into(std::string_view text, std::vector<uint32_t>& out, bool allow_special = false) const;
    std::string decode(const uint32_t* ids, size_t n) const;
    std::string decode(const std::vector<uint32_t>& ids) const { return decode(ids.data(), ids.size()); }
    // The bytes of one token (throws Error for an id past the vocabulary).
    std::string_view token_bytes(uint32_t id) const;

    uint32_t vocab_size() const;      // ids are < vocab_size(), specials included
    uint32_t eot_id() const;          // <|endoftext|>'s id (else <|end_of_text|>'s or </s>'s), or kNoToken
    const std::string& name() const;  // encoding name or file path
    PretokenPattern pattern() const;
    // The special tokens (text, id), in id order; the id of one by text, or kNoToken.
    const std::vector<std::pair<std::string, uint32_t>>& special_tokens() const;
    uint32_t special_token_id(std::string_view text) const;
    // Whether id names a token (false for holes such as cl100k_base's 100256, and past the vocabulary).
    bool is_token(uint32_t id) const;
    // The parts this tokenizer was built from (from_spec(t.spec()) encodes exactly like t).
    TokenizerSpec spec() const;

    // internals are the implementation's (tools/tokenizer.cpp)
  private:
    struct Impl;
    std::shared_ptr<const Impl> impl_;
};

// Writes spec as tiktoken JSON (pat_str, special_tokens, bpe_ranks, and explicit_n_vocab when
// spec.vocab_size is set), the format from_file reads back, e.g. for a trained vocabulary. The ranked
// ids must be consecutive (ranked_ids empty, or ranked_ids[r] == ranked_ids[0] + r) and extra_tokens
// empty, as the format has no place for others. Throws Error naming the path.
void write_tiktoken_json(const TokenizerSpec& spec, const std::string& path);

// The repository's data/ directory as seen from the running program: $LLMQ_DATA if set, else the
// directory containing the executable's "data/", else "./data".
std::string default_data_dir();

}  // namespace llmq
