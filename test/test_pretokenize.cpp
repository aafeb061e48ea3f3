// Tests of tools/pretokenize.h: the regex corner cases of the three patterns, one by one, and that the
// pieces of any byte string (invalid UTF-8 included) cover it exactly. The golden test in
// test_tokenizer.cpp checks the scanners on 2,625 real texts through the full tokenizer.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "../kernels/common.h"
#include "../tools/pretokenize.h"

using namespace llmq;

static std::vector<std::string> pieces(PretokenPattern p, const std::string& text) {
    std::vector<std::string> out;
    for (std::string_view s : pretokenize_pieces(p, text)) out.emplace_back(s);
    return out;
}
using V = std::vector<std::string>;
constexpr PretokenPattern G = PretokenPattern::GPT2, C = PretokenPattern::CL100K, O = PretokenPattern::O200K;

TEST(Pretokenize, Gpt2) {
    EXPECT_EQ(pieces(G, "Hello world's"), (V{"Hello", " world", "'s"}));
    EXPECT_EQ(pieces(G, "THE'S x'll"), (V{"THE", "'", "S", " x", "'ll"}));  // contractions are case-sensitive
    EXPECT_EQ(pieces(G, " 12345abc"), (V{" 12345", "abc"}));                 // numbers unbounded
    EXPECT_EQ(pieces(G, "a  b"), (V{"a", " ", " b"}));                      // \s+(?!\S) backs off one
    EXPECT_EQ(pieces(G, "a \n\n b"), (V{"a", " \n\n", " b"}));
    EXPECT_EQ(pieces(G, "a\nb"), (V{"a", "\n", "b"}));                      // single space char: \s+
    EXPECT_EQ(pieces(G, "end   "), (V{"end", "   "}));                      // trailing run kept whole
    EXPECT_EQ(pieces(G, "?!. ..."), (V{"?!.", " ..."}));
    EXPECT_EQ(pieces(G, "e\xCC\x81t\xC3\xA9"), (V{"e", "\xCC\x81", "t\xC3\xA9"}));  // a mark is not a letter
}

TEST(Pretokenize, Cl100k) {
    EXPECT_EQ(pieces(C, "THE'S x'LL"), (V{"THE", "'S", " x", "'LL"}));   // (?i:) contractions
    EXPECT_EQ(pieces(C, "it'\xC5\xBF"), (V{"it", "'\xC5\xBF"}));         // 'ſ folds to 's
    EXPECT_EQ(pieces(C, "12345"), (V{"123", "45"}));                      // \p{N}{1,3}
    EXPECT_EQ(pieces(C, " 123"), (V{" ", "123"}));
    EXPECT_EQ(pieces(C, "$hello (world"), (V{"$hello", " (", "world"}));   // one non-letter prefix
    EXPECT_EQ(pieces(C, "\thi"), (V{"\thi"}));
    EXPECT_EQ(pieces(C, "\nhi"), (V{"\n", "hi"}));                       // but not \r or \n
    EXPECT_EQ(pieces(C, "x.\n\ny"), (V{"x", ".\n\n", "y"}));              // punctuation takes newlines
    EXPECT_EQ(pieces(C, "x  \n \n  y"), (V{"x", "  \n \n", " ", " y"}));   // \s*[\r\n]+ up to the last newline
    EXPECT_EQ(pieces(C, "x \r\n"), (V{"x", " \r\n"}));
}

TEST(Pretokenize, O200k) {
    EXPECT_EQ(pieces(O, "HelloWorld"), (V{"Hello", "World"}));            // case-aware letter runs
    EXPECT_EQ(pieces(O, "HTMLParser"), (V{"HTMLParser"}));
    EXPECT_EQ(pieces(O, "ABC def"), (V{"ABC", " def"}));
    EXPECT_EQ(pieces(O, "don't I'M"), (V{"don't", " I'M"}));              // contraction glued to the word
    EXPECT_EQ(pieces(O, "a/b\n//\n"), (V{"a", "/b", "\n", "//\n"}));       // [\r\n/]* after punctuation
    EXPECT_EQ(pieces(O, "x...//"), (V{"x", "...//"}));
    EXPECT_EQ(pieces(O, "1234"), (V{"123", "4"}));
    // U* gives back a Lo/Lm/M character when no lowercase follows: "A" + mark matches U*W+ as A + mark.
    EXPECT_EQ(pieces(O, "A\xCC\x81" "B"), (V{"A\xCC\x81", "B"}));
    // a mark after a space: the space is the optional prefix
    EXPECT_EQ(pieces(O, " \xCC\x81x"), (V{" \xCC\x81x"}));
}

TEST(Pretokenize, PiecesCoverAnyBytes) {
    Rng rng(1234);
    const char alphabet[] = "aZ9 \t\r\n'sS/.,\xC3\xA9\xCC\x81\xE4\xB8\xAD\xF0\x9F\x98\x80\x80\xFF\xC5\xBF";
    for (int trial = 0; trial < 2000; trial++) {
        std::string text;
        size_t len = rng.below(40);
        for (size_t i = 0; i < len; i++)
            text += rng.below(4) == 0 ? (char)rng.below(256) : alphabet[rng.below(sizeof alphabet - 1)];
        for (PretokenPattern p : {G, C, O}) {
            std::string joined;
            size_t count = 0;
            pretokenize(p, text, [&](std::string_view piece) {
                ASSERT_FALSE(piece.empty());
                joined += piece;
                count++;
            });
            ASSERT_EQ(joined, text);
            ASSERT_LE(count, text.size());
        }
    }
}

TEST(Pretokenize, PatternFromRegex) {
    for (PretokenPattern p : {G, C, O}) EXPECT_EQ(pretoken_pattern_from_regex(pretoken_pattern_regex(p), "x"), p);
    try {
        pretoken_pattern_from_regex("\\w+", "my.json");
        FAIL() << "no throw";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("my.json"), std::string::npos);
    }
}
