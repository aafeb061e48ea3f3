// tokenizer_save.cpp: writes a TokenizerSpec as tiktoken JSON, the vocabulary format that
// Tokenizer::from_file reads back (used for vocabularies this project trains).
//
//   {"pat_str": "<regex>", "special_tokens": {"<text>": id, ...}, "bpe_ranks": "! <first id> <b64> <b64> ...",
//    "explicit_n_vocab": <vocab size>}
#include <cstdio>

#include "../kernels/common.h"
#include "tokenizer.h"

namespace llmq {

static std::string base64_encode(const std::string& s) {
    static const char* alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    for (size_t i = 0; i < s.size(); i += 3) {
        uint32_t v = (uint32_t)(uint8_t)s[i] << 16;
        if (i + 1 < s.size()) v |= (uint32_t)(uint8_t)s[i + 1] << 8;
        if (i + 2 < s.size()) v |= (uint8_t)s[i + 2];
        out += alphabet[v >> 18];
        out += alphabet[(v >> 12) & 63];
        out += i + 1 < s.size() ? alphabet[(v >> 6) & 63] : '=';
        out += i + 2 < s.size() ? alphabet[v & 63] : '=';
    }
    return out;
}

// A JSON string literal; bytes >= 0x80 pass through (special token texts are UTF-8).
static std::string json_quote(const std::string& s) {
    std::string out = "\"";
    for (unsigned char c : s) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += (char)c;
        } else if (c < 0x20) {
            out += format("\\u%04x", c);
        } else {
            out += (char)c;
        }
    }
    return out + "\"";
}

void write_tiktoken_json(const TokenizerSpec& spec, const std::string& path) {
    uint32_t first = spec.ranked_ids.empty() ? 0 : spec.ranked_ids[0];
    for (size_t r = 0; r < spec.ranked_ids.size(); r++)
        LLMQ_CHECK(spec.ranked_ids[r] == first + r, "%s: tiktoken JSON needs consecutive ids for the ranked tokens (rank %zu has id %u)",
                   path.c_str(), r, spec.ranked_ids[r]);
    LLMQ_CHECK(spec.extra_tokens.empty(), "%s: tiktoken JSON cannot hold %zu unranked tokens", path.c_str(), spec.extra_tokens.size());
    std::string json = "{\"pat_str\": " + json_quote(pretoken_pattern_regex(spec.pattern)) + ",\n \"special_tokens\": {";
    for (size_t i = 0; i < spec.special_tokens.size(); i++)
        json += (i ? ", " : "") + json_quote(spec.special_tokens[i].first) + ": " + std::to_string(spec.special_tokens[i].second);
    json += "},\n";
    if (spec.vocab_size) json += " \"explicit_n_vocab\": " + std::to_string(spec.vocab_size) + ",\n";
    json += " \"bpe_ranks\": \"! " + std::to_string(first);
    for (const std::string& t : spec.ranked_tokens) json += " " + base64_encode(t);
    json += "\"}\n";
    FILE* f = fopen(path.c_str(), "wb");
    LLMQ_CHECK(f, "%s: cannot open for writing", path.c_str());
    bool ok = fwrite(json.data(), 1, json.size(), f) == json.size();
    ok = (fclose(f) == 0) && ok;
    LLMQ_CHECK(ok, "%s: write failed", path.c_str());
}

}  // namespace llmq
