// Tests of tools/shard_pipeline.h: text -> shards. The reference is written here independently: documents
// are cut from the files by a plain split, each becomes EOT + Tokenizer::encode(doc), and the shards read back
// must equal that stream exactly, whatever the thread count, chunk size or shard size.
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "../kernels/common.h"
#include "../tools/shard.h"
#include "../tools/shard_pipeline.h"
#include "../tools/tokenizer.h"

using namespace llmq;
namespace fs = std::filesystem;

namespace {

std::string temp_dir() {
    char tmpl[] = "/tmp/llmq_pipeline_test_XXXXXX";
    const char* d = mkdtemp(tmpl);
    EXPECT_TRUE(d);
    return d;
}

std::string slurp(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), {});
}

void spit(const std::string& path, const std::string& s) {
    fs::create_directories(fs::path(path).parent_path());
    std::ofstream(path, std::ios::binary) << s;
}

// Random paragraphs of words (ASCII, accents, emoji, numbers, a literal <|endoftext|>), separated by one or
// more blank lines, some of them holding only spaces.
std::string random_text(Rng& rng, int paragraphs) {
    static const char* words[] = {"the", "cat", "sat", "on", "mat", "Über", "naïve", "日本語", "🙂", "1234",
                                  "don't", "  ", "<|endoftext|>", "x\ty", "end."};
    std::string s;
    for (int p = 0; p < paragraphs; p++) {
        int lines = 1 + (int)rng.below(3);
        for (int l = 0; l < lines; l++) {
            int n = 1 + (int)rng.below(12);
            for (int w = 0; w < n; w++) s += std::string(w ? " " : "") + words[rng.below(15)];
            s += "\n";
        }
        int blanks = 1 + (int)rng.below(2);
        for (int b = 0; b < blanks; b++) s += rng.below(4) == 0 ? "   \n" : "\n";
    }
    return s;
}

bool blank(const std::string& line) { return line.find_first_not_of(" \t\r\f\v") == std::string::npos; }

// The reference document split of one file's content.
std::vector<std::string> reference_docs(const std::string& content, DocSplit mode) {
    if (mode == DocSplit::File) return content.empty() ? std::vector<std::string>{} : std::vector<std::string>{content};
    std::vector<std::string> lines, docs;
    size_t pos = 0;
    while (pos < content.size()) {
        size_t nl = content.find('\n', pos);
        if (nl == std::string::npos) nl = content.size();
        lines.push_back(content.substr(pos, nl - pos));
        pos = nl + 1;
    }
    std::string cur;
    bool in_doc = false;
    for (const std::string& l : lines) {
        if (mode == DocSplit::Line) {
            if (!l.empty()) docs.push_back(l);
        } else if (blank(l)) {
            if (in_doc) docs.push_back(cur);
            cur.clear();
            in_doc = false;
        } else {
            cur += (in_doc ? "\n" : "") + l;
            in_doc = true;
        }
    }
    if (in_doc) docs.push_back(cur);
    return docs;
}

struct Corpus {
    std::string dir;
    std::vector<std::string> files;  // in the pipeline's order
};

// Files in nested directories, named so that sorted order differs from creation order.
Corpus make_corpus(Rng& rng) {
    Corpus c;
    c.dir = temp_dir() + "/corpus";
    std::vector<std::string> names = {"b.txt", "a/z.txt", "a/b/c.txt", "c.md", "a/empty.txt"};
    for (const std::string& n : names) spit(c.dir + "/" + n, n == "a/empty.txt" ? "" : random_text(rng, 40));
    for (const char* n : {"a/b/c.txt", "a/empty.txt", "a/z.txt", "b.txt", "c.md"}) c.files.push_back(c.dir + "/" + n);
    return c;
}

struct Expected {
    std::vector<uint32_t> train, val;
    int64_t docs_train = 0, docs_val = 0;
};

Expected expected_streams(const Tokenizer& tok, const Corpus& c, DocSplit mode, double val_fraction, uint64_t seed) {
    Expected e;
    uint64_t index = 0;
    for (const std::string& f : c.files) {
        for (const std::string& doc : reference_docs(slurp(f), mode)) {
            bool val = is_val_document(index++, seed, val_fraction);
            std::vector<uint32_t>& out = val ? e.val : e.train;
            (val ? e.docs_val : e.docs_train)++;
            out.push_back(tok.eot_id());
            std::vector<uint32_t> ids = tok.encode(doc);
            out.insert(out.end(), ids.begin(), ids.end());
        }
    }
    return e;
}

std::vector<uint32_t> read_all(const std::vector<std::string>& shards, const std::string& split) {
    std::vector<uint32_t> all;
    for (const std::string& s : shards) {
        if (s.find("_" + split + "_") == std::string::npos) continue;
        std::vector<uint32_t> t = read_shard(s);
        all.insert(all.end(), t.begin(), t.end());
    }
    return all;
}

ShardOptions quiet_options(const std::string& out) {
    ShardOptions o;
    o.out_dir = out;
    o.progress = false;
    o.chunk_bytes = 700;  // many chunks even for a small corpus
    return o;
}

}  // namespace

TEST(ShardPipeline, ListsDirectoriesRecursivelySorted) {
    Rng rng(1);
    Corpus c = make_corpus(rng);
    EXPECT_EQ(list_input_files({c.dir}), c.files);
    EXPECT_EQ(list_input_files({c.files[3], c.dir + "/a"}),
              (std::vector<std::string>{c.files[3], c.files[0], c.files[1], c.files[2]}));
    try {
        list_input_files({c.dir + "/nope.txt"});
        FAIL() << "no error";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find(c.dir + "/nope.txt"), std::string::npos) << e.what();
    }
}

TEST(ShardPipeline, RoundTripEveryDocModeAndSplit) {
    Tokenizer tok = Tokenizer::from_encoding("gpt2");
    Rng rng(2);
    Corpus c = make_corpus(rng);
    for (DocSplit mode : {DocSplit::BlankLine, DocSplit::Line, DocSplit::File}) {
        std::string out = temp_dir();
        ShardOptions o = quiet_options(out);
        o.docs = mode;
        o.val_fraction = 0.3;
        o.seed = 7;
        o.threads = 3;
        ShardStats s = shard_corpus(tok, {c.dir}, o);
        Expected e = expected_streams(tok, c, mode, 0.3, 7);
        ASSERT_GT(e.train.size(), 0u);
        EXPECT_EQ(read_all(s.shards, "train"), e.train) << "mode " << (int)mode;
        EXPECT_EQ(read_all(s.shards, "val"), e.val) << "mode " << (int)mode;
        EXPECT_EQ(s.docs_train, e.docs_train);
        EXPECT_EQ(s.docs_val, e.docs_val);
        EXPECT_EQ(s.tokens_train, (int64_t)e.train.size());
        EXPECT_EQ(s.tokens_val, (int64_t)e.val.size());
        if (mode != DocSplit::File) {  // enough documents for the split to be neither all nor nothing
            double frac = (double)e.docs_val / (e.docs_train + e.docs_val);
            EXPECT_GT(frac, 0.15);
            EXPECT_LT(frac, 0.45);
        }
        EXPECT_TRUE(fs::exists(out + "/data_train_000000.bin"));
        ShardHeader h = read_shard_header(out + "/data_train_000000.bin");
        EXPECT_EQ(h.vocab_size, 50257);
        EXPECT_EQ(h.eot_id, 50256);
        EXPECT_EQ(h.token_bytes, 2);
    }
}

TEST(ShardPipeline, SplitDependsOnSeedAndIsReproducible) {
    int differ = 0, val = 0;
    for (uint64_t i = 0; i < 2000; i++) {
        EXPECT_EQ(is_val_document(i, 5, 0.1), is_val_document(i, 5, 0.1));
        differ += is_val_document(i, 5, 0.1) != is_val_document(i, 6, 0.1);
        val += is_val_document(i, 5, 0.1);
        EXPECT_FALSE(is_val_document(i, 5, 0.0));
        EXPECT_TRUE(is_val_document(i, 5, 1.0));
    }
    EXPECT_GT(differ, 100);
    EXPECT_GT(val, 140);
    EXPECT_LT(val, 260);
}

TEST(ShardPipeline, ThreadCountDoesNotChangeABit) {
    Tokenizer tok = Tokenizer::from_encoding("gpt2");
    Rng rng(3);
    Corpus c = make_corpus(rng);
    std::string out1 = temp_dir(), out4 = temp_dir();
    ShardOptions o1 = quiet_options(out1), o4 = quiet_options(out4);
    o1.threads = 1;
    o4.threads = 4;
    o1.shard_tokens = o4.shard_tokens = 1500;
    o1.val_fraction = o4.val_fraction = 0.2;
    ShardStats s1 = shard_corpus(tok, {c.dir}, o1), s4 = shard_corpus(tok, {c.dir}, o4);
    ASSERT_EQ(s1.shards.size(), s4.shards.size());
    ASSERT_GT(s1.shards.size(), 2u);
    for (size_t i = 0; i < s1.shards.size(); i++) {
        EXPECT_EQ(fs::path(s1.shards[i]).filename(), fs::path(s4.shards[i]).filename());
        EXPECT_EQ(slurp(s1.shards[i]), slurp(s4.shards[i])) << s1.shards[i];
    }
}

TEST(ShardPipeline, RollsOverIntoFullShardsAndRemovesStaleOnes) {
    Tokenizer tok = Tokenizer::from_encoding("gpt2");
    Rng rng(4);
    Corpus c = make_corpus(rng);
    std::string out = temp_dir();
    ShardOptions o = quiet_options(out);
    o.val_fraction = 0;
    o.prefix = "tiny";
    o.shard_tokens = 1000;
    ShardStats s = shard_corpus(tok, {c.dir}, o);
    Expected e = expected_streams(tok, c, DocSplit::BlankLine, 0, 0);
    size_t n = (e.train.size() + 999) / 1000;
    ASSERT_GE(n, 3u);
    ASSERT_EQ(s.shards.size(), n);  // no val shard when nothing goes to val
    for (size_t i = 0; i < n; i++) {
        EXPECT_EQ(s.shards[i], out + format("/tiny_train_%06zu.bin", i));
        EXPECT_EQ(read_shard_header(s.shards[i]).num_tokens, i + 1 < n ? 1000 : (int64_t)(e.train.size() - 1000 * (n - 1)));
    }
    EXPECT_EQ(read_all(s.shards, "train"), e.train);
    EXPECT_FALSE(fs::exists(out + "/tiny_val_000000.bin"));

    spit(out + "/tiny_val_000003.bin", "stale");
    spit(out + "/tiny_notes.txt", "not a shard: kept");
    o.shard_tokens = 100'000'000;  // one shard now: the others are from the earlier run
    ShardStats again = shard_corpus(tok, {c.dir}, o);
    EXPECT_EQ(again.shards.size(), 1u);
    EXPECT_EQ(again.stale_removed, (int)n);
    EXPECT_FALSE(fs::exists(out + "/tiny_train_000001.bin"));
    EXPECT_FALSE(fs::exists(out + "/tiny_val_000003.bin"));
    EXPECT_TRUE(fs::exists(out + "/tiny_notes.txt"));
    EXPECT_EQ(read_shard(out + "/tiny_train_000000.bin"), e.train);
}

TEST(ShardPipeline, Uint32TokensForALargeVocabulary) {
    Tokenizer tok = Tokenizer::from_encoding("o200k_base");
    Rng rng(5);
    std::string dir = temp_dir();
    spit(dir + "/in.txt", random_text(rng, 30));
    ShardOptions o = quiet_options(dir + "/out");
    o.val_fraction = 0;
    ShardStats s = shard_corpus(tok, {dir + "/in.txt"}, o);
    ASSERT_EQ(s.shards.size(), 1u);
    ShardHeader h = read_shard_header(s.shards[0]);
    EXPECT_EQ(h.token_bytes, 4);
    EXPECT_EQ(h.vocab_size, (int32_t)tok.vocab_size());
    Corpus c{dir, {dir + "/in.txt"}};
    EXPECT_EQ(read_shard(s.shards[0]), expected_streams(tok, c, DocSplit::BlankLine, 0, 0).train);
}

TEST(ShardPipeline, ErrorsNameTheFileAndLeaveNoPartialShard) {
    Tokenizer tok = Tokenizer::from_encoding("gpt2");
    Rng rng(6);
    std::string dir = temp_dir();
    spit(dir + "/in.txt", random_text(rng, 10));
    auto expect_error = [&](const std::vector<std::string>& inputs, const ShardOptions& o, const std::string& needle) {
        try {
            shard_corpus(tok, inputs, o);
            ADD_FAILURE() << "no error for " << needle;
        } catch (const Error& e) {
            EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
        }
    };
    ShardOptions o = quiet_options(dir + "/out");
    expect_error({dir + "/in.txt", dir + "/missing.txt"}, o, dir + "/missing.txt");
    EXPECT_FALSE(fs::exists(dir + "/out/data_train_000000.bin"));
    ShardOptions under_file = quiet_options(dir + "/in.txt/out");  // a directory under a regular file
    expect_error({dir + "/in.txt"}, under_file, dir + "/in.txt/out");
    ShardOptions bad = quiet_options(dir + "/out");
    bad.shard_tokens = 0;
    expect_error({dir + "/in.txt"}, bad, "--shard-tokens");
    bad = quiet_options(dir + "/out");
    bad.val_fraction = 1.5;
    expect_error({dir + "/in.txt"}, bad, "--val-fraction");
    EXPECT_THROW(parse_doc_split("paragraph"), Error);

    // a failure in the middle of a run: shard 1's final name is taken by a directory, so its rename fails
    fs::create_directories(dir + "/out2/data_train_000001.bin");
    ShardOptions mid = quiet_options(dir + "/out2");
    mid.shard_tokens = 50;
    mid.val_fraction = 0;
    expect_error({dir + "/in.txt"}, mid, dir + "/out2/data_train_000001.bin");
    EXPECT_FALSE(fs::exists(dir + "/out2/data_train_000001.bin.tmp"));
    EXPECT_FALSE(fs::exists(dir + "/out2/data_train_000002.bin"));
    EXPECT_TRUE(fs::is_directory(dir + "/out2/data_train_000001.bin"));
    fs::remove(dir + "/out2/data_train_000001.bin");
    fs::remove(dir + "/out2/data_train_000000.bin");  // a complete shard: kept by the failed run
    for (const auto& entry : fs::recursive_directory_iterator(dir))
        EXPECT_EQ(entry.path().extension(), entry.is_directory() ? "" : ".txt") << entry.path();
}
