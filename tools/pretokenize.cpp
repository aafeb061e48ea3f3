// pretokenize.cpp: the three tiktoken pattern strings and the non-template helpers of pretokenize.h.
#include "pretokenize.h"

#include "../kernels/common.h"

namespace llmq {

static const char* const kGpt2Regex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
static const char* const kCl100kRegex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
static const char* const kO200kRegex =
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?)"
    R"(|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?)"
    R"(|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

const char* pretoken_pattern_regex(PretokenPattern pattern) {
    switch (pattern) {
        case PretokenPattern::GPT2: return kGpt2Regex;
        case PretokenPattern::CL100K: return kCl100kRegex;
        case PretokenPattern::O200K: return kO200kRegex;
    }
    return kGpt2Regex;
}

PretokenPattern pretoken_pattern_from_regex(const std::string& pat_str, const std::string& source) {
    for (PretokenPattern p : {PretokenPattern::GPT2, PretokenPattern::CL100K, PretokenPattern::O200K})
        if (pat_str == pretoken_pattern_regex(p)) return p;
    throw Error(format("%s: unsupported pre-tokenizer pattern (only the gpt2, cl100k_base and o200k_base "
                       "regexes are implemented): %.200s",
                       source.c_str(), pat_str.c_str()));
}

std::vector<std::string_view> pretokenize_pieces(PretokenPattern pattern, std::string_view text) {
    std::vector<std::string_view> pieces;
    pretokenize(pattern, text, [&](std::string_view piece) { pieces.push_back(piece); });
    return pieces;
}

}  // namespace llmq
