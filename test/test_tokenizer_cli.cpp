// Tests of the ./tokenizer program (tools/tokenizer_main.cpp), run as a child process from the repository
// root (`make test` builds the programs first): batch mode against tiktoken's golden ids, encode/decode,
// shard and train-vocab end to end, and one-line errors with exit status 1 for bad input.
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "../kernels/common.h"
#include "../tools/json.h"
#include "../tools/shard.h"
#include "../tools/tokenizer.h"

using namespace llmq;
namespace fs = std::filesystem;

namespace {

struct RunResult {
    int status = -1;
    std::string out, err;
};

std::string slurp(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), {});
}

void spit(const std::string& path, const std::string& s) { std::ofstream(path, std::ios::binary) << s; }

std::string temp_dir() {
    char tmpl[] = "/tmp/llmq_cli_test_XXXXXX";
    const char* d = mkdtemp(tmpl);
    EXPECT_TRUE(d);
    return d;
}

// Runs "./tokenizer <args>" with stdin from a file (or /dev/null); captures stdout, stderr and the exit status.
RunResult run_tokenizer(const std::string& args, const std::string& stdin_path = "/dev/null") {
    static std::string dir = temp_dir();
    std::string out = dir + "/stdout", err = dir + "/stderr";
    std::string cmd = "./tokenizer " + args + " < '" + stdin_path + "' > '" + out + "' 2> '" + err + "'";
    int rc = system(cmd.c_str());
    RunResult r;
    r.status = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
    r.out = slurp(out);
    r.err = slurp(err);
    return r;
}

std::vector<std::string> lines_of(const std::string& s) {
    std::vector<std::string> lines;
    std::istringstream in(s);
    for (std::string l; std::getline(in, l);) lines.push_back(l);
    return lines;
}

std::string ids_line(const std::vector<uint32_t>& ids) {
    std::string s;
    for (size_t i = 0; i < ids.size(); i++) s += (i ? " " : "") + std::to_string(ids[i]);
    return s;
}

// A failed run: status 1, nothing on stdout, stderr exactly one line "error: ..." containing needle.
void expect_error(const RunResult& r, const std::string& needle) {
    EXPECT_EQ(r.status, 1) << r.err;
    std::vector<std::string> lines = lines_of(r.err);
    ASSERT_EQ(lines.size(), 1u) << r.err;
    EXPECT_EQ(lines[0].rfind("error: ", 0), 0u) << r.err;
    EXPECT_NE(lines[0].find(needle), std::string::npos) << "'" << needle << "' not in: " << r.err;
}

class TokenizerCli : public ::testing::Test {
  protected:
    void SetUp() override {
        ASSERT_TRUE(fs::exists("./tokenizer")) << "./tokenizer is missing: run the tests from the repository root "
                                                  "after `make` (make test builds it)";
    }
};

}  // namespace

TEST_F(TokenizerCli, HelpListsEveryCommand) {
    RunResult r = run_tokenizer("--help");
    EXPECT_EQ(r.status, 0);
    for (const char* cmd : {"encode", "decode", "batch", "shard", "train-vocab"}) {
        EXPECT_NE(r.out.find(cmd), std::string::npos) << cmd;
        RunResult h = run_tokenizer(std::string(cmd) + " --help");
        EXPECT_EQ(h.status, 0) << cmd;
        EXPECT_EQ(h.out.rfind(std::string("usage: tokenizer ") + cmd, 0), 0u) << h.out;
    }
    expect_error(run_tokenizer("frobnicate"), "frobnicate");
    expect_error(run_tokenizer("encode --bogus 1"), "--bogus");
    EXPECT_EQ(run_tokenizer("").status, 1);
}

TEST_F(TokenizerCli, BatchMatchesTiktokenGoldenIds) {
    // the first lines of the golden file ({"text": ..., "gpt2": [ids], ...}), plus a blank line
    std::ifstream golden("test/data/tiktoken_public.jsonl");
    ASSERT_TRUE(golden) << "test/data/tiktoken_public.jsonl";
    std::string dir = temp_dir(), input, expected[2];
    const char* encodings[2] = {"gpt2", "cl100k_base"};
    std::string line;
    for (int i = 0; i < 120 && std::getline(golden, line); i++) {
        JsonValue j = parse_json(line);
        input += line + "\n";  // batch reads the "text" member; the golden ids beside it are ignored
        for (int e = 0; e < 2; e++) {
            std::vector<uint32_t> ids;
            for (const JsonValue& id : j.at(encodings[e]).as_array()) ids.push_back((uint32_t)id.as_int());
            expected[e] += ids_line(ids) + "\n";
        }
        if (i == 60) {
            input += "\n";
            expected[0] += "\n";
            expected[1] += "\n";
        }
    }
    spit(dir + "/in.jsonl", input);
    for (int e = 0; e < 2; e++) {
        for (int threads : {1, 3}) {
            RunResult r = run_tokenizer(format("batch --encoding %s --threads %d", encodings[e], threads), dir + "/in.jsonl");
            EXPECT_EQ(r.status, 0) << r.err;
            EXPECT_TRUE(r.out == expected[e]) << encodings[e] << ", " << threads << " threads: output differs";
        }
    }
    spit(dir + "/bad.jsonl", "{\"text\": \"fine\"}\n{\"text\": 3}\n");
    RunResult bad = run_tokenizer("batch --encoding gpt2", dir + "/bad.jsonl");
    EXPECT_EQ(bad.status, 1);
    EXPECT_NE(bad.err.find("line 2"), std::string::npos) << bad.err;
}

TEST_F(TokenizerCli, EncodeDecodeRoundTrip) {
    std::string dir = temp_dir();
    std::string text = "Hello world! naïve café 🙂 <|endoftext|>\nsecond line";
    spit(dir + "/t.txt", text);
    Tokenizer tok = Tokenizer::from_encoding("gpt2");
    RunResult enc = run_tokenizer("encode --encoding gpt2 " + dir + "/t.txt");
    EXPECT_EQ(enc.status, 0) << enc.err;
    EXPECT_EQ(enc.out, ids_line(tok.encode(text)) + "\n");
    EXPECT_EQ(run_tokenizer("encode --text 'hello world'").out, "31373 995\n");
    EXPECT_EQ(run_tokenizer("encode --allow-special --text '<|endoftext|>'").out, "50256\n");
    spit(dir + "/ids.txt", enc.out);
    RunResult dec = run_tokenizer("decode --encoding gpt2 " + dir + "/ids.txt");
    EXPECT_EQ(dec.status, 0) << dec.err;
    EXPECT_EQ(dec.out, text);
    RunResult from_stdin = run_tokenizer("decode", dir + "/ids.txt");
    EXPECT_EQ(from_stdin.out, text);
    expect_error(run_tokenizer("decode --ids '1 2 99999999'"), "99999999");
}

TEST_F(TokenizerCli, ShardEndToEnd) {
    std::string dir = temp_dir();
    std::string text;
    for (int i = 0; i < 200; i++) text += format("Paragraph %d says hello.\nIt has two lines.\n\n", i);
    spit(dir + "/in.txt", text);
    RunResult r = run_tokenizer("shard --encoding gpt2 --quiet --out " + dir + "/out --prefix p --val-fraction 0.1 "
                                "--threads 2 --shard-tokens 1000 " + dir + "/in.txt");
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_NE(r.err.find("200 documents"), std::string::npos) << r.err;
    std::vector<std::string> shards = lines_of(r.out);
    ASSERT_GE(shards.size(), 3u);
    EXPECT_EQ(shards[0], dir + "/out/p_train_000000.bin");
    Tokenizer tok = Tokenizer::from_encoding("gpt2");
    size_t docs = 0, tokens = 0, expected_tokens = 0;
    for (const std::string& s : shards) {
        std::vector<uint32_t> t = read_shard(s);
        tokens += t.size();
        for (uint32_t id : t) docs += id == tok.eot_id();
    }
    for (int i = 0; i < 200; i++)
        expected_tokens += 1 + tok.encode(format("Paragraph %d says hello.\nIt has two lines.", i)).size();
    EXPECT_EQ(docs, 200u);
    EXPECT_EQ(tokens, expected_tokens);
}

TEST_F(TokenizerCli, TrainVocabReportsBytesPerToken) {
    std::string dir = temp_dir();
    Rng rng(31);
    std::string text;
    const char* words[] = {"tokenizer", "training", "vocabulary", "merges", "bytes", "pairs", "the", "of"};
    for (int i = 0; i < 6000; i++) text += std::string(words[rng.below(8)]) + (rng.below(10) ? " " : ".\n");
    spit(dir + "/corpus.txt", text);
    RunResult r = run_tokenizer("train-vocab --quiet --size 300 --out " + dir + "/v.json " + dir + "/corpus.txt");
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_NE(r.out.find("bytes/token with the new vocabulary"), std::string::npos) << r.out;
    Tokenizer tok = Tokenizer::from_file(dir + "/v.json");
    EXPECT_EQ(tok.vocab_size(), 300u);
    RunResult enc = run_tokenizer("encode --vocab " + dir + "/v.json --text 'training tokenizer'");
    EXPECT_EQ(enc.status, 0) << enc.err;
    EXPECT_EQ(enc.out, ids_line(tok.encode("training tokenizer")) + "\n");
}

TEST_F(TokenizerCli, BadInputIsOneLineErrorAndExitOne) {
    std::string dir = temp_dir();
    spit(dir + "/in.txt", "some text\n\nmore text\n");
    spit(dir + "/corrupt.json", "{\"pat_str\": \"x\", \"bpe_ranks\": \"! 0 @@@\"");
    expect_error(run_tokenizer("encode " + dir + "/missing.txt"), dir + "/missing.txt");
    expect_error(run_tokenizer("encode --encoding gpt7 --text hi"), "gpt7");
    expect_error(run_tokenizer("encode --vocab " + dir + "/nope.json --text hi"), dir + "/nope.json");
    expect_error(run_tokenizer("encode --vocab " + dir + "/corrupt.json --text hi"), dir + "/corrupt.json");
    expect_error(run_tokenizer("shard --encoding gpt2 --quiet --out " + dir + "/out " + dir + "/missing.txt"),
                 dir + "/missing.txt");
    expect_error(run_tokenizer("shard --encoding gpt2 --quiet --out " + dir + "/in.txt/sub " + dir + "/in.txt"),
                 dir + "/in.txt/sub");
    expect_error(run_tokenizer("shard --encoding gpt2 --quiet --docs pages --out " + dir + "/o " + dir + "/in.txt"),
                 "--docs");
    expect_error(run_tokenizer("shard --encoding gpt2 --quiet --shard-tokens lots --out " + dir + "/o " + dir + "/in.txt"),
                 "--shard-tokens");
    expect_error(run_tokenizer("train-vocab --size 300 --out /nonexistent_llmq_dir/v.json " + dir + "/in.txt"),
                 "/nonexistent_llmq_dir/v.json");
    expect_error(run_tokenizer("train-vocab --size 10 --out " + dir + "/v.json " + dir + "/in.txt"), "--size");
    // a write failure mid-run: the second shard's final name is taken by a directory
    fs::create_directories(dir + "/o2/data_train_000001.bin");
    std::string big;
    for (int i = 0; i < 100; i++) big += "a paragraph of some words\n\n";
    spit(dir + "/big.txt", big);
    expect_error(run_tokenizer("shard --encoding gpt2 --quiet --val-fraction 0 --shard-tokens 100 --out " + dir +
                               "/o2 " + dir + "/big.txt"),
                 "data_train_000001.bin");
    EXPECT_FALSE(fs::exists(dir + "/o2/data_train_000001.bin.tmp"));
    EXPECT_FALSE(fs::exists(dir + "/o2/data_train_000002.bin"));
}
