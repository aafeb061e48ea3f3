// Tests of the Tokenizer's loaders (tools/tokenizer_load.cpp): each vocabulary format, written by the test
// from the bundled gpt2 / cl100k_base vocabularies, must encode exactly like the bundled tiktoken JSON;
// and bad input (missing file, corrupt JSON, unknown encoding, bad base64) must throw one Error that
// names the file or encoding.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <unistd.h>
#include <vector>

#include "../kernels/common.h"
#include "../tools/json.h"
#include "../tools/tokenizer.h"

using namespace llmq;

namespace {

// A fresh directory under /tmp for the files one test writes.
struct TempDir {
    std::string path;
    TempDir() {
        char tmpl[] = "/tmp/llmq_tok_test_XXXXXX";
        path = mkdtemp(tmpl);
    }
    ~TempDir() { (void)!system(("rm -rf '" + path + "'").c_str()); }
    std::string write(const std::string& name, const std::string& bytes) const {
        std::string p = path + "/" + name;
        std::ofstream(p, std::ios::binary) << bytes;
        return p;
    }
};

std::string base64(std::string_view s) {
    const char* a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    for (size_t i = 0; i < s.size(); i += 3) {
        uint32_t v = (uint8_t)s[i] << 16;
        if (i + 1 < s.size()) v |= (uint8_t)s[i + 1] << 8;
        if (i + 2 < s.size()) v |= (uint8_t)s[i + 2];
        out += a[v >> 18];
        out += a[(v >> 12) & 63];
        out += i + 1 < s.size() ? a[(v >> 6) & 63] : '=';
        out += i + 2 < s.size() ? a[v & 63] : '=';
    }
    return out;
}

std::string json_string(const std::string& s) {
    std::string out = "\"";
    for (unsigned char c : s) {
        if (c == '"' || c == '\\') out += '\\', out += (char)c;
        else if (c < 0x20) out += format("\\u%04x", c);
        else out += (char)c;
    }
    return out + "\"";
}

// Texts that exercise the vocabulary: the first golden records and a slice of the Brown corpus.
const std::vector<std::string>& sample_texts() {
    static std::vector<std::string> texts = [] {
        std::vector<std::string> t;
        std::string lines = read_file_bytes("test/data/tiktoken_public.jsonl");
        size_t pos = 0;
        for (int i = 0; i < 300 && pos < lines.size(); i++) {
            size_t end = lines.find('\n', pos);
            t.push_back(parse_json(lines.substr(pos, end - pos)).at("text").as_string());
            pos = end + 1;
        }
        t.push_back(read_file_bytes("data/text/brown.txt").substr(0, 200000));
        t.push_back("tricky: \xC3\xA9t\xC3\xA9 \xE4\xB8\xAD\xE6\x96\x87 \xF0\x9F\x98\x80 \x80\xFF <|endoftext|> 12345   \n\n");
        return t;
    }();
    return texts;
}

void expect_same_encoding(const Tokenizer& got, const Tokenizer& want) {
    EXPECT_EQ(got.vocab_size(), want.vocab_size());
    EXPECT_EQ(got.eot_id(), want.eot_id());
    EXPECT_EQ(got.pattern(), want.pattern());
    for (uint32_t id = 0; id < want.vocab_size(); id++) {
        ASSERT_EQ(got.is_token(id), want.is_token(id)) << id;
        if (want.is_token(id)) {
            ASSERT_EQ(got.token_bytes(id), want.token_bytes(id)) << id;
        }
    }
    for (const std::string& text : sample_texts()) {
        ASSERT_EQ(got.encode(text), want.encode(text)) << text.substr(0, 100);
        ASSERT_EQ(got.encode(text, true), want.encode(text, true)) << text.substr(0, 100);
    }
}

const Tokenizer& gpt2() {
    static Tokenizer t = Tokenizer::from_encoding("gpt2", "data");
    return t;
}

// Throws? Then the message must contain every needle.
template <typename F>
void expect_error_naming(F&& f, std::vector<std::string> needles) {
    try {
        f();
        ADD_FAILURE() << "no Error thrown; wanted one naming " << needles[0];
    } catch (const Error& e) {
        for (auto& n : needles) EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << "message: " << e.what() << "\nmissing: " << n;
    }
}

}  // namespace

TEST(TokenizerLoad, Gpt2EncoderJsonAndVocabBpe) {
    Tokenizer a = Tokenizer::from_file("data/tokenizers/gpt2/encoder.json");
    expect_same_encoding(a, gpt2());
    Tokenizer b = Tokenizer::from_file("data/tokenizers/gpt2/vocab.bpe");
    EXPECT_EQ(b.encode(sample_texts().back()), gpt2().encode(sample_texts().back()));
}

TEST(TokenizerLoad, HfTokenizerJsonBothMergeForms) {
    // model.vocab from encoder.json (byte-level strings), merges from vocab.bpe.
    JsonValue encoder = parse_json_file("data/tokenizers/gpt2/encoder.json");
    std::string vocab = "{";
    for (auto& [token, id] : encoder.as_object()) {
        if (token == "<|endoftext|>") continue;  // an added token in HF files
        vocab += (vocab.size() > 1 ? "," : "") + json_string(token) + ":" + std::to_string(id.as_int());
    }
    vocab += "}";
    std::string bpe = read_file_bytes("data/tokenizers/gpt2/vocab.bpe");
    std::string merges_strings = "[", merges_pairs = "[";
    size_t pos = bpe.find('\n') + 1;  // skip "#version"
    while (pos < bpe.size()) {
        size_t end = bpe.find('\n', pos);
        if (end == std::string::npos) end = bpe.size();
        std::string line = bpe.substr(pos, end - pos);
        pos = end + 1;
        if (line.empty()) continue;
        size_t sp = line.find(' ');
        const char* sep = merges_strings.size() > 1 ? "," : "";
        merges_strings += sep + json_string(line);
        merges_pairs += sep + ("[" + json_string(line.substr(0, sp)) + "," + json_string(line.substr(sp + 1)) + "]");
    }
    merges_strings += "]";
    merges_pairs += "]";
    TempDir dir;
    for (const std::string& merges : {merges_strings, merges_pairs}) {
        std::string json = R"({"version":"1.0","added_tokens":[{"id":50256,"content":"<|endoftext|>","special":true}],)"
                           R"("pre_tokenizer":{"type":"ByteLevel","add_prefix_space":false,"use_regex":true},)"
                           R"("model":{"type":"BPE","vocab":)" + vocab + R"(,"merges":)" + merges + "}}";
        Tokenizer hf = Tokenizer::from_file(dir.write("tokenizer.json", json));
        expect_same_encoding(hf, gpt2());
    }
}

TEST(TokenizerLoad, TiktokenRankFiles) {
    TempDir dir;
    std::string lines;
    for (uint32_t id = 0; id < 50256; id++) lines += base64(gpt2().token_bytes(id)) + " " + std::to_string(id) + "\n";
    Tokenizer t = Tokenizer::from_file(dir.write("r50k.tiktoken", lines));
    expect_same_encoding(t, gpt2());  // <|endoftext|> lands right after the last rank, as in gpt2

    // cl100k by name: its pattern and special tokens
    Tokenizer cl = Tokenizer::from_encoding("cl100k_base", "data");
    lines.clear();
    for (uint32_t id = 0; id < 100256; id++) lines += base64(cl.token_bytes(id)) + " " + std::to_string(id) + "\n";
    Tokenizer t2 = Tokenizer::from_file(dir.write("cl100k_base.tiktoken", lines));
    EXPECT_EQ(t2.pattern(), PretokenPattern::CL100K);
    EXPECT_EQ(t2.special_token_id("<|endofprompt|>"), 100276u);
    EXPECT_EQ(t2.encode(sample_texts().back(), true), cl.encode(sample_texts().back(), true));
    EXPECT_EQ(t2.encode(sample_texts()[5]), cl.encode(sample_texts()[5]));
}

TEST(TokenizerLoad, TiktokenJsonFileAndDataDir) {
    Tokenizer t = Tokenizer::from_file("data/tokenizers/tiktoken/o200k_base.json");
    EXPECT_EQ(t.pattern(), PretokenPattern::O200K);
    EXPECT_EQ(t.vocab_size(), 200019u);
    const char* old = getenv("LLMQ_DATA");
    setenv("LLMQ_DATA", "/some/where", 1);
    EXPECT_EQ(default_data_dir(), "/some/where");
    if (old) setenv("LLMQ_DATA", old, 1);
    else unsetenv("LLMQ_DATA");
}

TEST(TokenizerLoad, BadInputNamesTheFileOrEncoding) {
    expect_error_naming([] { Tokenizer::from_encoding("p50k_base", "data"); }, {"p50k_base"});
    expect_error_naming([] { Tokenizer::from_encoding("gpt2", "/no/such/dir"); }, {"gpt2", "/no/such/dir"});
    expect_error_naming([] { Tokenizer::from_file("/no/such/vocab.json"); }, {"/no/such/vocab.json"});
    TempDir dir;
    std::string good = read_file_bytes("data/tokenizers/tiktoken/gpt2.json");
    std::string truncated = dir.write("truncated.json", good.substr(0, 1000));
    expect_error_naming([&] { Tokenizer::from_file(truncated); }, {truncated, "invalid JSON"});
    std::string bad_b64 = good;
    bad_b64.replace(bad_b64.find("IQ=="), 4, "I*==");
    std::string bad_json_b64 = dir.write("bad_b64.json", bad_b64);
    expect_error_naming([&] { Tokenizer::from_file(bad_json_b64); }, {bad_json_b64, "base64", "I*=="});
    std::string bad_tiktoken = dir.write("bad.tiktoken", "IQ== 0\nIg= 1\n");
    expect_error_naming([&] { Tokenizer::from_file(bad_tiktoken); }, {bad_tiktoken + ":2", "base64"});
    std::string no_rank = dir.write("norank.tiktoken", "IQ==\n");
    expect_error_naming([&] { Tokenizer::from_file(no_rank); }, {no_rank});
    std::string missing_key = dir.write("nokey.json", R"({"pat_str": "x", "special_tokens": {}, "bpe_ranks": "! 0 IQ=="})");
    expect_error_naming([&] { Tokenizer::from_file(missing_key); }, {missing_key, "pattern"});
    std::string few = dir.write("few.tiktoken", "IQ== 0\nIg== 1\n");
    expect_error_naming([&] { Tokenizer::from_file(few); }, {few, "256"});
    std::string other_json = dir.write("other.json", R"({"hello": "world"})");
    expect_error_naming([&] { Tokenizer::from_file(other_json); }, {other_json, "unrecognised"});
    TokenizerSpec spec;
    spec.name = "holey";
    for (int b = 0; b < 255; b++) spec.ranked_tokens.push_back(std::string(1, (char)b));
    spec.ranked_tokens.push_back("ab");
    expect_error_naming([&] { Tokenizer::from_spec(spec); }, {"holey", "0xff"});
}

TEST(TokenizerLoad, SpecRoundTripsThroughTiktokenJson) {
    TempDir dir;
    for (const char* enc : {"gpt2", "cl100k_base"}) {
        Tokenizer tok = Tokenizer::from_encoding(enc, "data");
        std::string path = dir.write(std::string(enc) + "_saved.json", "");
        write_tiktoken_json(tok.spec(), path);
        Tokenizer back = Tokenizer::from_file(path);
        EXPECT_EQ(back.name(), path);
        expect_same_encoding(back, tok);
    }
    // ids out of rank order have no place in tiktoken JSON
    TokenizerSpec odd = gpt2().spec();
    odd.ranked_ids.assign(odd.ranked_tokens.size(), 0);
    for (size_t r = 0; r < odd.ranked_ids.size(); r++) odd.ranked_ids[r] = (uint32_t)(odd.ranked_ids.size() - 1 - r);
    expect_error_naming([&] { write_tiktoken_json(odd, dir.path + "/odd.json"); }, {"odd.json", "consecutive"});
}
