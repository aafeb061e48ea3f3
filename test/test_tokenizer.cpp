// Tests of tools/tokenizer.h against tiktoken: the golden file of 2,625 texts for gpt2, cl100k_base and
// o200k_base (ids and round trip), whole-corpus token counts, and a byte-level round-trip fuzz test.
// Loader formats and bad input are in test_tokenizer_load.cpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "../kernels/common.h"
#include "../tools/json.h"
#include "../tools/tokenizer.h"

using namespace llmq;

namespace {

const char* const kEncodings[] = {"gpt2", "cl100k_base", "o200k_base"};

const Tokenizer& bundled(const std::string& name) {
    static std::map<std::string, Tokenizer> cache;
    auto it = cache.find(name);
    if (it == cache.end()) it = cache.emplace(name, Tokenizer::from_encoding(name, "data")).first;
    return it->second;
}

std::string show_ids(const std::vector<uint32_t>& ids) {
    std::string s;
    for (uint32_t id : ids) s += std::to_string(id) + " ";
    return s;
}

}  // namespace

TEST(Tokenizer, GoldenFileMatchesTiktoken) {
    std::string lines = read_file_bytes("test/data/tiktoken_public.jsonl");
    size_t records = 0, pos = 0;
    int failures = 0;
    while (pos < lines.size() && failures < 10) {
        size_t end = lines.find('\n', pos);
        if (end == std::string::npos) end = lines.size();
        std::string_view line(lines.data() + pos, end - pos);
        pos = end + 1;
        if (line.empty()) continue;
        JsonValue rec = parse_json(line, "tiktoken_public.jsonl record " + std::to_string(records));
        const std::string& text = rec.at("text").as_string();
        for (const char* enc : kEncodings) {
            std::vector<uint32_t> want;
            for (const JsonValue& id : rec.at(enc).as_array()) want.push_back((uint32_t)id.as_int());
            std::vector<uint32_t> got(3, 0xDEADBEEF);  // poison: encode_into appends, so clear first
            got.clear();
            bundled(enc).encode_into(text, got);
            if (got != want) {
                failures++;
                ADD_FAILURE() << enc << " record " << records << " text [" << text.substr(0, 200) << "]\n want "
                              << show_ids(want).substr(0, 400) << "\n got  " << show_ids(got).substr(0, 400);
            }
            EXPECT_EQ(bundled(enc).decode(got), text) << enc << " record " << records;
        }
        records++;
    }
    EXPECT_EQ(records, 2625u);
}

TEST(Tokenizer, WholeCorpusCountsMatchTiktoken) {
    // tiktoken 1.0.22's counts, no special tokens (table in data/SOURCES.md / shared data README)
    const std::map<std::string, std::pair<size_t, size_t>> want = {
        {"gpt2", {1171787, 1840099}}, {"cl100k_base", {1143588, 1773269}}, {"o200k_base", {1132413, 1742016}}};
    std::string brown = read_file_bytes("data/text/brown.txt");
    std::string nlp = read_file_bytes("data/text/nlp-corpus.txt");
    std::vector<uint32_t> ids;
    for (const char* enc : kEncodings) {
        ids.assign(7, 0xDEADBEEF);
        ids.clear();
        bundled(enc).encode_into(brown, ids);
        EXPECT_EQ(ids.size(), want.at(enc).first) << enc << " brown.txt";
        ids.clear();
        bundled(enc).encode_into(nlp, ids);
        EXPECT_EQ(ids.size(), want.at(enc).second) << enc << " nlp-corpus.txt";
    }
}

TEST(Tokenizer, RoundTripsRandomBytes) {
    Rng rng(99);
    // Mostly valid text fragments with random bytes mixed in, so pieces are realistic and invalid UTF-8
    // sits inside words, runs of spaces and numbers.
    const char* fragments[] = {" the", "Hello", "'s", "'LL", "  ", "\n", "\r\n", "123456", "\xC3\xA9", "\xCC\x81",
                               "\xE4\xB8\xAD\xE6\x96\x87", "\xF0\x9F\x98\x80", "<|endoftext|>", "//", "...", "\t", "\xC5\xBF"};
    for (int trial = 0; trial < 3000; trial++) {
        std::string text;
        size_t parts = 1 + rng.below(12);
        for (size_t i = 0; i < parts; i++) {
            if (rng.below(3) == 0) {
                size_t n = 1 + rng.below(6);
                for (size_t k = 0; k < n; k++) text += (char)rng.below(256);
            } else {
                text += fragments[rng.below(sizeof fragments / sizeof fragments[0])];
            }
        }
        for (const char* enc : kEncodings) {
            const Tokenizer& tok = bundled(enc);
            std::vector<uint32_t> ids = tok.encode(text);
            for (uint32_t id : ids) ASSERT_LT(id, tok.vocab_size());
            ASSERT_EQ(tok.decode(ids), text) << enc << " trial " << trial;
        }
    }
}

// tiktoken's merge loop written plainly, as a reference for the long-piece (heap) path.
static std::vector<uint32_t> reference_bpe(const std::map<std::string, uint32_t>& rank_of, const std::string& piece) {
    std::vector<std::string> parts;
    for (char c : piece) parts.emplace_back(1, c);
    for (;;) {
        uint32_t best = UINT32_MAX;
        size_t at = 0;
        for (size_t i = 0; i + 1 < parts.size(); i++) {
            auto it = rank_of.find(parts[i] + parts[i + 1]);
            if (it != rank_of.end() && it->second < best) { best = it->second; at = i; }
        }
        if (best == UINT32_MAX) break;
        parts[at] += parts[at + 1];
        parts.erase(parts.begin() + at + 1);
    }
    std::vector<uint32_t> ids;
    for (auto& p : parts) ids.push_back(rank_of.at(p));
    return ids;
}

TEST(Tokenizer, LongPiecesMergeLikeTiktoken) {
    const Tokenizer& tok = bundled("gpt2");
    std::map<std::string, uint32_t> rank_of;  // gpt2: rank == id
    for (uint32_t id = 0; id < 50256; id++) rank_of[std::string(tok.token_bytes(id))] = id;
    Rng rng(5);
    const std::string letters = "etaoinshrdlucmfwypvbgkjqxz";
    for (int trial = 0; trial < 20; trial++) {
        // one pre-token piece of 129..400 letters (past the array path's 128 bytes), or of digits
        size_t n = 129 + rng.below(272);
        std::string piece;
        for (size_t i = 0; i < n; i++)
            piece += trial % 4 == 3 ? (char)('0' + rng.below(10)) : letters[rng.below(rng.below(2) ? 8 : 26)];
        ASSERT_EQ(tok.encode(piece), reference_bpe(rank_of, piece)) << piece;
    }
    std::string spaces(300, ' ');  // a long whitespace piece
    EXPECT_EQ(tok.encode(spaces), reference_bpe(rank_of, spaces));
}

TEST(Tokenizer, SpecialTokensArePlainTextUnlessAllowed) {
    for (const char* enc : kEncodings) {
        const Tokenizer& tok = bundled(enc);
        uint32_t eot = tok.eot_id();
        ASSERT_NE(eot, Tokenizer::kNoToken) << enc;
        EXPECT_EQ(tok.token_bytes(eot), "<|endoftext|>");
        std::string text = "one<|endoftext|>two";
        std::vector<uint32_t> plain = tok.encode(text);
        EXPECT_EQ(std::count(plain.begin(), plain.end(), eot), 0) << enc;
        EXPECT_EQ(tok.decode(plain), text);
        std::vector<uint32_t> want = tok.encode("one");
        want.push_back(eot);
        for (uint32_t id : tok.encode("two")) want.push_back(id);
        EXPECT_EQ(tok.encode(text, true), want) << enc;
        EXPECT_EQ(tok.decode(tok.encode(text, true)), text);
        // a special token next to another one and at both ends
        std::vector<uint32_t> ids = tok.encode("<|endoftext|><|endoftext|>x<|endoftext|>", true);
        ASSERT_EQ(ids.size(), 4u);
        EXPECT_EQ(ids[0], eot);
        EXPECT_EQ(ids[1], eot);
        EXPECT_EQ(ids[3], eot);
        // almost a special token
        std::vector<uint32_t> almost = tok.encode("<|endoftext|", true);
        EXPECT_EQ(std::count(almost.begin(), almost.end(), eot), 0);
    }
    EXPECT_EQ(bundled("gpt2").eot_id(), 50256u);
    EXPECT_EQ(bundled("cl100k_base").eot_id(), 100257u);
    EXPECT_EQ(bundled("o200k_base").eot_id(), 199999u);
    const Tokenizer& cl = bundled("cl100k_base");
    EXPECT_EQ(cl.encode("<|fim_prefix|><|endofprompt|>", true), (std::vector<uint32_t>{100258, 100276}));
    EXPECT_EQ(cl.special_token_id("<|fim_suffix|>"), 100260u);
    EXPECT_EQ(cl.special_token_id("<|nope|>"), Tokenizer::kNoToken);
}

TEST(Tokenizer, LongestSpecialTokenWins) {
    TokenizerSpec spec;
    spec.name = "tiny";
    for (int b = 0; b < 256; b++) spec.ranked_tokens.push_back(std::string(1, (char)b));
    spec.special_tokens = {{"<s>", 256}, {"<s>x", 257}};
    Tokenizer tok = Tokenizer::from_spec(spec);
    EXPECT_EQ(tok.encode("<s>xy<s>", true), (std::vector<uint32_t>{257, 'y', 256}));
    EXPECT_EQ(tok.encode("<s>", false), (std::vector<uint32_t>{'<', 's', '>'}));
    EXPECT_EQ(tok.vocab_size(), 258u);
    EXPECT_EQ(tok.eot_id(), Tokenizer::kNoToken);
}

TEST(Tokenizer, VocabularySizesAndHoles) {
    EXPECT_EQ(bundled("gpt2").vocab_size(), 50257u);
    EXPECT_EQ(bundled("cl100k_base").vocab_size(), 100277u);
    EXPECT_EQ(bundled("o200k_base").vocab_size(), 200019u);
    const Tokenizer& cl = bundled("cl100k_base");
    EXPECT_FALSE(cl.is_token(100256));  // no token between the ranks and the special tokens
    EXPECT_TRUE(cl.is_token(100255));
    EXPECT_THROW(cl.token_bytes(100256), Error);
    for (const char* enc : kEncodings) {
        const Tokenizer& tok = bundled(enc);
        uint32_t past = tok.vocab_size();
        try {
            std::vector<uint32_t> ids = {0, past};
            tok.decode(ids);
            FAIL() << "no throw";
        } catch (const Error& e) {
            EXPECT_NE(std::string(e.what()).find(std::to_string(past)), std::string::npos) << e.what();
        }
    }
}
