// bpe_trainer: trains a byte-level BPE vocabulary (as GPT-2's was made) and saves it in tiktoken's JSON form,
// which Tokenizer::from_file loads.
//
//   1. pre-tokenize the text with the chosen pattern (pretokenize.h, default gpt2's) and count each distinct
//      piece ("word"); merges never cross piece boundaries;
//   2. start from the 256 single-byte tokens; repeatedly merge the most frequent adjacent pair of tokens over
//      all words (weighted by word count) into a new token, until the vocabulary has the requested size.
//      Pair counts are kept in a map and updated incrementally: an index from each pair to the words that
//      contain it means a merge only revisits those words, and a max-heap with lazy deletion (a stale entry
//      is re-pushed with its current count when popped) finds the best pair without rescanning.
//      Ties go to the pair whose (left bytes, right bytes) is lexicographically lowest, so training is
//      deterministic (no dependence on hash order or thread count).
//   3. ids: 0..255 are the bytes 0x00..0xff, then one id per new token in merge order (= tiktoken rank),
//      then <|endoftext|> as the last id. vocab_size counts all of them.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "pretokenize.h"

namespace llmq {

struct BpeTrainOptions {
    uint32_t vocab_size = 32000;   // 256 bytes + merges + <|endoftext|>
    std::string pattern = "gpt2";  // pre-tokenizer: gpt2, cl100k_base or o200k_base
    int threads = 0;               // for counting pieces; <= 0 = all hardware threads
    bool progress = true;          // progress bar on stderr
};

struct BpeVocab {
    std::vector<std::string> tokens;                    // id -> bytes (the EOT is not in here)
    std::vector<std::pair<uint32_t, uint32_t>> merges;  // in order; merge i made tokens[256 + i]
    std::string pattern;                                // pre-tokenizer name, e.g. "gpt2"
    uint32_t eot_id() const { return (uint32_t)tokens.size(); }
    uint32_t vocab_size() const { return (uint32_t)tokens.size() + 1; }
};

// Maps a pattern name to the scanner's enum and to tiktoken's pat_str (the regex text saved in the vocabulary
// file). Throws Error naming --pattern for an unknown name.
PretokenPattern pretoken_pattern_from_name(const std::string& name);
std::string pretoken_pat_str(const std::string& name);

// Distinct pre-tokenized pieces of text and how often each occurs. The text is cut into blocks at newlines
// (fixed positions, independent of threads), counted in parallel, then summed.
std::unordered_map<std::string, int64_t> count_pieces(std::string_view text, const std::string& pattern, int threads);

// Trains on piece counts / on text. Throws Error if vocab_size is below 257. If the text runs out of pairs
// first, the vocabulary is smaller than asked (vocab_size() says how large).
BpeVocab train_bpe(const std::unordered_map<std::string, int64_t>& pieces, const BpeTrainOptions& opts);
BpeVocab train_bpe(std::string_view text, const BpeTrainOptions& opts);

// tiktoken JSON (tokenizer.h's write_tiktoken_json): {"pat_str": ..., "special_tokens": {"<|endoftext|>": eot},
// "explicit_n_vocab": n, "bpe_ranks": "! 0 <base64 of token 0> <base64 of token 1> ..."}. Written to
// path + ".tmp" then renamed; throws Error naming the file on failure.
void save_vocab(const BpeVocab& vocab, const std::string& path);

}  // namespace llmq
