// Tests of tools/json.h: every value type, every escape, the strictness rules and the error offsets.
#include <gtest/gtest.h>

#include <string>

#include "../kernels/common.h"
#include "../tools/json.h"

using namespace llmq;

TEST(Json, ParsesNestedDocumentInOrder) {
    JsonValue v = parse_json(R"( {"b": [1, -2.5, 3e2, true, false, null], "a": {"x": "y"}, "": 0} )");
    ASSERT_TRUE(v.is_object());
    ASSERT_EQ(v.size(), 3u);
    EXPECT_EQ(v.as_object()[0].first, "b");  // file order, not sorted
    EXPECT_EQ(v.as_object()[1].first, "a");
    const JsonValue& b = v.at("b");
    ASSERT_EQ(b.size(), 6u);
    EXPECT_EQ(b.at(0).as_int(), 1);
    EXPECT_DOUBLE_EQ(b.at(1).as_number(), -2.5);
    EXPECT_DOUBLE_EQ(b.at(2).as_number(), 300.0);
    EXPECT_TRUE(b.at(3).as_bool());
    EXPECT_FALSE(b.at(4).as_bool());
    EXPECT_TRUE(b.at(5).is_null());
    EXPECT_EQ(v.at("a").at("x").as_string(), "y");
    EXPECT_EQ(v.at("").as_int(), 0);
    EXPECT_EQ(v.find("missing"), nullptr);
    EXPECT_TRUE(parse_json("[]").as_array().empty());
    EXPECT_TRUE(parse_json("{}").as_object().empty());
    EXPECT_EQ(parse_json("\"\"").as_string(), "");
}

TEST(Json, Numbers) {
    EXPECT_EQ(parse_json("-0").as_number(), 0.0);
    EXPECT_EQ(parse_json("123456789012").as_int(), 123456789012ll);
    EXPECT_DOUBLE_EQ(parse_json("1.25E-3").as_number(), 1.25e-3);
    EXPECT_DOUBLE_EQ(parse_json("7e+2").as_number(), 700.0);
    EXPECT_THROW(parse_json("1.5").as_int(), Error);
    for (const char* bad : {"01", "-", "1.", ".5", "1e", "+1", "0x10", "1e999", "NaN", "Infinity", "- 1"})
        EXPECT_THROW(parse_json(bad), Error) << bad;
}

TEST(Json, StringEscapesDecodeToUtf8) {
    EXPECT_EQ(parse_json(R"("a\"b\\c\/d\be\ff\ng\rh\ti")").as_string(), "a\"b\\c/d\be\ff\ng\rh\ti");
    EXPECT_EQ(parse_json(R"("\u0041\u00e9\u20AC")").as_string(), "A\xC3\xA9\xE2\x82\xAC");  // A, e-acute, euro
    EXPECT_EQ(parse_json(R"("\u0000")").as_string(), std::string(1, '\0'));
    EXPECT_EQ(parse_json(R"("\ud83d\ude00")").as_string(), "\xF0\x9F\x98\x80");              // U+1F600 via a surrogate pair
    EXPECT_EQ(parse_json(R"("\uDBFF\uDFFF")").as_string(), "\xF4\x8F\xBF\xBF");              // U+10FFFF
    EXPECT_EQ(parse_json("\"\xC4\xA0 raw \xF0\x9F\x98\x80\"").as_string(), "\xC4\xA0 raw \xF0\x9F\x98\x80");
}

TEST(Json, RejectsMalformedStrings) {
    for (const char* bad : {
             "\"abc",              // unterminated
             "\"a\\x\"",           // unknown escape
             "\"\\u12\"",          // short \u
             "\"\\u12G4\"",        // bad hex
             "\"\\ud83d\"",        // lone high surrogate
             "\"\\ud83dx\"",       // high surrogate then text
             "\"\\ud83d\\u0041\"", // high surrogate then a non-low one
             "\"\\ude00\"",        // lone low surrogate
             "\"a\tb\"",           // raw control character
             "\"\xC0\xAF\"",       // overlong UTF-8
             "\"\xED\xA0\x80\"",   // UTF-8-encoded surrogate
             "\"\xF5\x80\x80\x80\"",  // past U+10FFFF
             "\"\xE2\x82\"",       // truncated sequence
             "\"\x80\"",           // stray continuation byte
             "'single'",
         })
        EXPECT_THROW(parse_json(bad), Error) << bad;
}

TEST(Json, RejectsMalformedStructure) {
    for (const char* bad : {"", "   ", "[1,]", "{\"a\":1,}", "[1 2]", "{\"a\" 1}", "{a:1}", "{\"a\":}", "[", "{",
                            "tru", "nul", "[1]]", "{} {}", "// c\n1", "[1,,2]", "{\"a\":1 \"b\":2}"})
        EXPECT_THROW(parse_json(bad), Error) << bad;
    std::string deep(600, '[');
    deep += std::string(600, ']');
    EXPECT_THROW(parse_json(deep), Error);
    std::string ok(100, '[');
    ok += std::string(100, ']');
    EXPECT_NO_THROW(parse_json(ok));
}

TEST(Json, ErrorNamesSourceAndByteOffset) {
    try {
        parse_json("{\"a\": [1, 2,, 3]}", "vocab.json");
        FAIL() << "no throw";
    } catch (const Error& e) {
        EXPECT_STREQ(e.what(), "vocab.json: invalid JSON at byte 12: unexpected character");
    }
    try {
        parse_json("[1] x", "cfg");
        FAIL() << "no throw";
    } catch (const Error& e) {
        EXPECT_STREQ(e.what(), "cfg: invalid JSON at byte 4: unexpected content after the value");
    }
}

TEST(Json, AccessorsThrowOnTypeMismatch) {
    JsonValue v = parse_json(R"({"s": "x", "n": 1})");
    EXPECT_THROW(v.at("s").as_number(), Error);
    EXPECT_THROW(v.at("n").as_string(), Error);
    EXPECT_THROW(v.at("nope"), Error);
    EXPECT_THROW(v.at(0), Error);
    EXPECT_THROW(v.as_array(), Error);
    EXPECT_THROW(parse_json("[1]").at(1), Error);
    try {
        v.at("missing_key");
        FAIL() << "no throw";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("missing_key"), std::string::npos);
    }
}

TEST(Json, ParsesBundledTiktokenFile) {
    JsonValue v = parse_json_file("data/tokenizers/tiktoken/gpt2.json");
    EXPECT_EQ(v.at("explicit_n_vocab").as_int(), 50257);
    EXPECT_EQ(v.at("special_tokens").at("<|endoftext|>").as_int(), 50256);
    EXPECT_EQ(v.at("bpe_ranks").as_string().substr(0, 9), "! 0 IQ== ");
    try {
        parse_json_file("data/no/such/file.json");
        FAIL() << "no throw";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("data/no/such/file.json"), std::string::npos);
    }
}
