// Tests of tools/bpe_trainer.h: the incremental trainer equals a naive one (recount every pair at every
// merge), ties break as documented, training is deterministic, and the saved vocabulary loads with
// Tokenizer::from_file and round-trips text.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "../kernels/common.h"
#include "../tools/bpe_trainer.h"
#include "../tools/json.h"
#include "../tools/tokenizer.h"

using namespace llmq;

namespace {

std::string temp_dir() {
    char tmpl[] = "/tmp/llmq_bpe_test_XXXXXX";
    const char* d = mkdtemp(tmpl);
    EXPECT_TRUE(d);
    return d;
}

// Words from random syllables (and a few non-ASCII ones), with punctuation and line breaks: enough distinct
// pairs for a few hundred merges.
std::string random_text(Rng& rng, int words) {
    static const char* syllables[] = {"th", "e", "in", "g", "s", "re", "an", "on", "ti", "o", "ca", "fé", "日本", "🙂",
                                      "42", "'s", "qu", "x", "ly", "er"};
    std::string s;
    for (int i = 0; i < words; i++) {
        int n = 1 + (int)rng.below(4);
        for (int k = 0; k < n; k++) s += syllables[rng.below(20)];
        s += rng.below(8) == 0 ? ".\n" : rng.below(5) == 0 ? ", " : " ";
    }
    return s;
}

// The textbook algorithm: recount all pairs before every merge; best = highest count, then lowest
// (left bytes, right bytes); a merge whose bytes already exist reuses that token.
std::vector<std::string> naive_train(const std::unordered_map<std::string, int64_t>& pieces, uint32_t vocab_size) {
    std::vector<std::string> tokens;
    std::map<std::string, uint32_t> id_of;
    for (int b = 0; b < 256; b++) {
        tokens.push_back(std::string(1, (char)b));
        id_of[tokens.back()] = b;
    }
    std::vector<std::pair<std::vector<uint32_t>, int64_t>> words;
    for (auto& [p, n] : pieces) {
        std::vector<uint32_t> w;
        for (unsigned char c : p) w.push_back(c);
        words.emplace_back(w, n);
    }
    while (tokens.size() < vocab_size - 1) {
        std::map<std::pair<uint32_t, uint32_t>, int64_t> counts;
        for (auto& [w, n] : words)
            for (size_t i = 0; i + 1 < w.size(); i++) counts[{w[i], w[i + 1]}] += n;
        if (counts.empty()) break;
        std::pair<uint32_t, uint32_t> best;
        int64_t best_n = -1;
        for (auto& [p, n] : counts) {
            bool better = n > best_n || (n == best_n && std::make_pair(tokens[p.first], tokens[p.second]) <
                                                            std::make_pair(tokens[best.first], tokens[best.second]));
            if (better) best = p, best_n = n;
        }
        std::string bytes = tokens[best.first] + tokens[best.second];
        uint32_t z;
        if (id_of.count(bytes)) {
            z = id_of[bytes];
        } else {
            z = tokens.size();
            tokens.push_back(bytes);
            id_of[bytes] = z;
        }
        for (auto& [w, n] : words) {
            std::vector<uint32_t> m;
            for (size_t i = 0; i < w.size();) {
                if (i + 1 < w.size() && w[i] == best.first && w[i + 1] == best.second) {
                    m.push_back(z);
                    i += 2;
                } else {
                    m.push_back(w[i++]);
                }
            }
            w = m;
        }
    }
    return tokens;
}

BpeTrainOptions quiet(uint32_t size) {
    BpeTrainOptions o;
    o.vocab_size = size;
    o.progress = false;
    return o;
}

}  // namespace

TEST(BpeTrainer, TieBreakOnTheClassicExample) {
    // "aaabdaaabac" is one gpt2 piece. aa (4) first; then ab and (aa,a) both count 2 and "a" < "aa", so ab;
    // then (aa,ab) -> "aaab".
    BpeVocab v = train_bpe(std::string_view("aaabdaaabac"), quiet(260));
    ASSERT_EQ(v.tokens.size(), 259u);
    EXPECT_EQ(v.tokens[256], "aa");
    EXPECT_EQ(v.tokens[257], "ab");
    EXPECT_EQ(v.tokens[258], "aaab");
    EXPECT_EQ(v.eot_id(), 259u);
    EXPECT_EQ(v.vocab_size(), 260u);
    for (int b = 0; b < 256; b++) ASSERT_EQ(v.tokens[b], std::string(1, (char)b));
}

TEST(BpeTrainer, IncrementalEqualsNaive) {
    Rng rng(21);
    std::string text = random_text(rng, 3000);
    auto pieces = count_pieces(text, "gpt2", 2);
    const uint32_t size = 420;
    BpeVocab v = train_bpe(pieces, quiet(size));
    std::vector<std::string> ref = naive_train(pieces, size);
    ASSERT_EQ(v.tokens.size(), ref.size());
    for (size_t i = 0; i < ref.size(); i++) ASSERT_EQ(v.tokens[i], ref[i]) << "token " << i;
}

TEST(BpeTrainer, DeterministicAndStopsWhenPairsRunOut) {
    Rng rng(22);
    std::string text = random_text(rng, 2000);
    BpeVocab a = train_bpe(text, quiet(350)), b = train_bpe(text, quiet(350));
    EXPECT_EQ(a.tokens, b.tokens);
    EXPECT_EQ(a.merges, b.merges);
    BpeTrainOptions one = quiet(350);
    one.threads = 1;
    EXPECT_EQ(train_bpe(text, one).tokens, a.tokens);
    // a tiny text has few pairs: the vocabulary ends early instead of inventing tokens
    BpeVocab tiny = train_bpe(std::string_view("abab cdcd"), quiet(1000));
    EXPECT_LT(tiny.vocab_size(), 270u);
    EXPECT_GT(tiny.vocab_size(), 257u);
    EXPECT_THROW(train_bpe(text, quiet(256)), Error);
    BpeTrainOptions bad = quiet(300);
    bad.pattern = "gpt5";
    EXPECT_THROW(train_bpe(text, bad), Error);
}

TEST(BpeTrainer, SavedVocabularyLoadsAndRoundTrips) {
    Rng rng(23);
    std::string text = random_text(rng, 4000);
    BpeVocab v = train_bpe(text, quiet(500));
    ASSERT_EQ(v.vocab_size(), 500u);
    std::string path = temp_dir() + "/vocab.json";
    save_vocab(v, path);
    JsonValue json = parse_json_file(path);
    EXPECT_EQ(json.at("bpe_ranks").as_string().rfind("! 0 AA== AQ== Ag== ", 0), 0u);  // bytes 0, 1, 2 first
    EXPECT_EQ(json.at("special_tokens").at("<|endoftext|>").as_int(), 499);
    EXPECT_EQ(json.at("pat_str").as_string(), pretoken_pat_str("gpt2"));
    EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));

    Tokenizer tok = Tokenizer::from_file(path);
    EXPECT_EQ(tok.vocab_size(), 500u);
    EXPECT_EQ(tok.eot_id(), 499u);
    for (uint32_t id = 0; id < 499; id++) ASSERT_EQ(tok.token_bytes(id), v.tokens[id]) << id;
    std::vector<uint32_t> ids = tok.encode(text);
    EXPECT_EQ(tok.decode(ids), text);
    EXPECT_LT(ids.size() * 2, text.size()) << "merges must shorten the text well below one token per byte";
    std::string other = "Unseen words: zebra, Ωmega, \xff\xfe bytes, <|endoftext|> and 🙂🙂.";
    EXPECT_EQ(tok.decode(tok.encode(other)), other);
    EXPECT_EQ(tok.encode("<|endoftext|>", true), std::vector<uint32_t>{499});
}

TEST(BpeTrainer, SaveToAnUnwritablePathNamesIt) {
    BpeVocab v = train_bpe(std::string_view("hello hello world"), quiet(260));
    std::string path = "/nonexistent_llmq_dir/v.json";
    try {
        save_vocab(v, path);
        FAIL() << "no error";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    }
}
