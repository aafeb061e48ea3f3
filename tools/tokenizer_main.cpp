// tokenizer: the command-line front of llmq's tokenizer (tools/tokenizer.h) and of its data tools:
// encode/decode text, encode JSON lines in batch, turn a corpus into training shards, train a vocabulary.
// Every subcommand has --help; errors print one line "error: <message>" and exit 1.
#include <unistd.h>

#include <charconv>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "../kernels/common.h"
#include "bpe_trainer.h"
#include "json.h"
#include "ordered_pool.h"
#include "shard_pipeline.h"
#include "tokenizer.h"

using namespace llmq;

namespace {

const char* kUsage =
    "usage: tokenizer <command> [options]\n"
    "\n"
    "commands:\n"
    "  encode       text -> token ids (one line, space-separated)\n"
    "  decode       token ids -> text\n"
    "  batch        JSON lines {\"text\": ...} on stdin -> one line of ids per input line\n"
    "  shard        text files or directories -> token shards for training (train/val split)\n"
    "  train-vocab  train a byte-level BPE vocabulary on text files\n"
    "\n"
    "Encodings: gpt2, cl100k_base, o200k_base (bundled in data/tokenizers), or --vocab FILE for a\n"
    "vocabulary file (tiktoken JSON or .tiktoken, GPT-2 encoder.json, HF tokenizer.json, or one made by\n"
    "train-vocab). 'tokenizer <command> --help' describes each command.\n";

const char* kEncodingHelp =
    "  --encoding NAME    gpt2 (default), cl100k_base or o200k_base\n"
    "  --vocab PATH       a vocabulary file instead of a bundled encoding\n";

struct Command {
    const char* name;
    const char* help;                   // full --help text
    std::set<std::string> value_flags;  // flags that take a value
    std::set<std::string> bool_flags;
    std::function<void(struct Args&)> run;
};

struct Args {
    std::string command;
    std::map<std::string, std::string> values;
    std::set<std::string> flags;
    std::vector<std::string> positional;

    bool has(const std::string& f) const { return values.count(f) || flags.count(f); }
    std::string get(const std::string& f, const std::string& fallback = "") const {
        auto it = values.find(f);
        return it == values.end() ? fallback : it->second;
    }
    int64_t get_int(const std::string& f, int64_t fallback) const {
        if (!values.count(f)) return fallback;
        const std::string& s = values.at(f);
        int64_t v;
        auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
        LLMQ_CHECK(ec == std::errc() && end == s.data() + s.size(), "%s: '%s' is not an integer", f.c_str(), s.c_str());
        return v;
    }
    double get_double(const std::string& f, double fallback) const {
        if (!values.count(f)) return fallback;
        const std::string& s = values.at(f);
        char* end;
        double v = strtod(s.c_str(), &end);
        LLMQ_CHECK(!s.empty() && *end == 0, "%s: '%s' is not a number", f.c_str(), s.c_str());
        return v;
    }
};

Args parse_args(const Command& cmd, int argc, char** argv) {
    Args a;
    a.command = cmd.name;
    for (int i = 2; i < argc; i++) {
        std::string s = argv[i];
        if (s.size() > 2 && s.compare(0, 2, "--") == 0) {
            std::string value;
            size_t eq = s.find('=');
            bool inline_value = eq != std::string::npos;
            std::string flag = inline_value ? s.substr(0, eq) : s;
            if (cmd.value_flags.count(flag)) {
                if (inline_value) {
                    value = s.substr(eq + 1);
                } else {
                    LLMQ_CHECK(i + 1 < argc, "%s: missing value (see 'tokenizer %s --help')", flag.c_str(), cmd.name);
                    value = argv[++i];
                }
                a.values[flag] = value;
            } else if (cmd.bool_flags.count(flag) && !inline_value) {
                a.flags.insert(flag);
            } else {
                throw Error(format("%s: unknown option for '%s' (see 'tokenizer %s --help')", flag.c_str(), cmd.name,
                                   cmd.name));
            }
        } else {
            a.positional.push_back(s);
        }
    }
    return a;
}

Tokenizer load_tokenizer(const Args& a) {
    LLMQ_CHECK(!(a.has("--encoding") && a.has("--vocab")), "--encoding and --vocab: give one, not both");
    if (a.has("--vocab")) return Tokenizer::from_file(a.get("--vocab"));
    return Tokenizer::from_encoding(a.get("--encoding", "gpt2"));
}

std::string read_stdin() {
    std::string s;
    char buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, stdin)) > 0) s.append(buf, n);
    LLMQ_CHECK(!ferror(stdin), "stdin: read error");
    return s;
}

void append_ids(std::string& out, const std::vector<uint32_t>& ids) {
    char buf[16];
    for (size_t i = 0; i < ids.size(); i++) {
        if (i) out.push_back(' ');
        auto [end, ec] = std::to_chars(buf, buf + sizeof buf, ids[i]);
        out.append(buf, end);
    }
}

void write_stdout(const std::string& s) {
    LLMQ_CHECK(fwrite(s.data(), 1, s.size(), stdout) == s.size(), "stdout: write failed: %s", strerror(errno));
}

// ---- encode / decode ----

void run_encode(Args& a) {
    LLMQ_CHECK(a.positional.size() <= 1, "encode: one input file at most, got %zu", a.positional.size());
    LLMQ_CHECK(!(a.has("--text") && !a.positional.empty()), "encode: give --text or a FILE, not both");
    std::string text = a.has("--text") ? a.get("--text") : a.positional.empty() ? read_stdin() : read_file_bytes(a.positional[0]);
    Tokenizer tok = load_tokenizer(a);
    std::string out;
    append_ids(out, tok.encode(text, a.flags.count("--allow-special") > 0));
    write_stdout(out + "\n");
}

void run_decode(Args& a) {
    LLMQ_CHECK(a.positional.size() <= 1, "decode: one input file at most, got %zu", a.positional.size());
    std::string source = a.positional.empty() ? "stdin" : a.positional[0];
    std::string text = a.has("--ids") ? a.get("--ids") : a.positional.empty() ? read_stdin() : read_file_bytes(source);
    Tokenizer tok = load_tokenizer(a);
    std::vector<uint32_t> ids;
    const char* p = text.data();
    const char* end = p + text.size();
    for (;;) {
        while (p < end && (isspace((unsigned char)*p) || *p == ',')) p++;
        if (p == end) break;
        uint32_t id;
        auto [next, ec] = std::from_chars(p, end, id);
        LLMQ_CHECK(ec == std::errc() && (next == end || isspace((unsigned char)*next) || *next == ','),
                   "%s: '%.20s' is not a token id", source.c_str(), p);
        LLMQ_CHECK(tok.is_token(id), "%s: %u is not a token id of %s (vocabulary size %u)", source.c_str(), id,
                   tok.name().c_str(), tok.vocab_size());
        ids.push_back(id);
        p = next;
    }
    write_stdout(tok.decode(ids));
}

// ---- batch ----

// The "text" member of one JSON line (throws Error naming the line).
std::string text_of_json_line(const std::string& line, size_t line_no) {
    std::string source = format("stdin line %zu", line_no);
    JsonValue j = parse_json(line, source);
    const JsonValue* text = j.find("text");
    LLMQ_CHECK(text && text->is_string(), "%s: expected an object with a string member \"text\"", source.c_str());
    return text->as_string();
}

void run_batch(Args& a) {
    LLMQ_CHECK(a.positional.empty(), "batch: reads stdin only, unexpected argument '%s'", a.positional[0].c_str());
    Tokenizer tok = load_tokenizer(a);
    bool allow_special = a.flags.count("--allow-special") > 0;
    int threads = (int)a.get_int("--threads", 0);
    struct Job {
        std::vector<std::string> lines;
        size_t first_line = 0;
    };
    size_t line_no = 0;
    char* line = nullptr;  // getline's buffer, reused
    size_t line_cap = 0;
    struct FreeLine {
        char*& p;
        ~FreeLine() { free(p); }
    } free_line{line};
    run_ordered<Job, std::string>(
        threads, 2 * (size_t)resolve_threads(threads) + 2,
        [&](Job& job) {  // ~256 KB of lines per job
            job.lines.clear();
            job.first_line = line_no + 1;
            size_t bytes = 0;
            ssize_t len;
            while (bytes < (1 << 18) && (len = getline(&line, &line_cap, stdin)) >= 0) {
                bytes += len;
                job.lines.emplace_back(line, len > 0 && line[len - 1] == '\n' ? len - 1 : len);
                line_no++;
            }
            LLMQ_CHECK(!ferror(stdin), "stdin: read error");
            return !job.lines.empty();
        },
        [&](Job& job, std::string& out) {
            out.clear();
            std::vector<uint32_t> ids;
            for (size_t i = 0; i < job.lines.size(); i++) {
                const std::string& l = job.lines[i];
                if (l.find_first_not_of(" \t\r") != std::string::npos) {  // a blank line gives an empty line
                    ids.clear();
                    tok.encode_into(text_of_json_line(l, job.first_line + i), ids, allow_special);
                    append_ids(out, ids);
                }
                out.push_back('\n');
            }
        },
        [&](Job&, std::string& out) { write_stdout(out); });
    LLMQ_CHECK(fflush(stdout) == 0, "stdout: write failed: %s", strerror(errno));
}

// ---- shard ----

void run_shard(Args& a) {
    LLMQ_CHECK(a.has("--encoding") || a.has("--vocab"), "shard: give --encoding NAME or --vocab PATH");
    LLMQ_CHECK(a.has("--out"), "shard: --out DIR is required");
    LLMQ_CHECK(!a.positional.empty(), "shard: no input files given");
    ShardOptions o;
    o.out_dir = a.get("--out");
    o.prefix = a.get("--prefix", o.prefix);
    LLMQ_CHECK(!o.prefix.empty() && o.prefix.find('/') == std::string::npos, "--prefix: '%s' is not a file name prefix",
               o.prefix.c_str());
    o.threads = (int)a.get_int("--threads", 0);
    o.val_fraction = a.get_double("--val-fraction", o.val_fraction);
    o.seed = (uint64_t)a.get_int("--seed", 0);
    o.docs = parse_doc_split(a.get("--docs", "blankline"));
    o.shard_tokens = a.get_int("--shard-tokens", o.shard_tokens);
    o.progress = !a.flags.count("--quiet");
    Tokenizer tok = load_tokenizer(a);
    ShardStats s = shard_corpus(tok, a.positional, o);
    fprintf(stderr, "shard: %s\n", shard_summary(s).c_str());
    if (o.val_fraction > 0 && s.docs_val == 0)
        fprintf(stderr, "shard: warning: no document went to the val split (raise --val-fraction?)\n");
    if (s.stale_removed) fprintf(stderr, "shard: removed %d old shards of an earlier run\n", s.stale_removed);
    for (const std::string& p : s.shards) printf("%s\n", p.c_str());
}

// ---- train-vocab ----

double bytes_per_token(const Tokenizer& tok, const std::string& text) {
    std::vector<uint32_t> ids = tok.encode(text);
    return ids.empty() ? 0.0 : (double)text.size() / ids.size();
}

void run_train_vocab(Args& a) {
    LLMQ_CHECK(a.has("--size"), "train-vocab: --size N is required");
    LLMQ_CHECK(a.has("--out"), "train-vocab: --out FILE is required");
    LLMQ_CHECK(!a.positional.empty(), "train-vocab: no input files given");
    BpeTrainOptions o;
    int64_t size = a.get_int("--size", 0);
    LLMQ_CHECK(size >= 257 && size <= 1000000, "--size: %lld is out of range (257 to 1000000)", (long long)size);
    o.vocab_size = (uint32_t)size;
    o.pattern = a.get("--pattern", "gpt2");
    o.threads = (int)a.get_int("--threads", 0);
    o.progress = !a.flags.count("--quiet");
    pretoken_pattern_from_name(o.pattern);  // fail early on a bad name
    std::string out = a.get("--out");
    {  // fail now, not after training, if the vocabulary cannot be saved there
        std::string probe = out + ".tmp";
        FILE* f = fopen(probe.c_str(), "wb");
        LLMQ_CHECK(f, "%s: cannot create: %s", probe.c_str(), strerror(errno));
        fclose(f);
        remove(probe.c_str());
    }

    std::string text, heldout, heldout_what;
    for (const std::string& f : list_input_files(a.positional)) {
        text += read_file_bytes(f);
        if (!text.empty() && text.back() != '\n') text.push_back('\n');  // files do not run into each other
    }
    if (a.has("--heldout")) {
        heldout = read_file_bytes(a.get("--heldout"));
        heldout_what = a.get("--heldout");
    } else {  // the last 5% of the input, from a line start, is held out of training
        size_t cut = text.find('\n', text.size() * 95 / 100);
        cut = cut == std::string::npos ? text.size() : cut + 1;
        heldout = text.substr(cut);
        text.resize(cut);
        heldout_what = "the last 5% of the input";
    }
    double t0 = now_seconds();
    BpeVocab vocab = train_bpe(text, o);
    double seconds = now_seconds() - t0;
    save_vocab(vocab, out);
    fprintf(stderr, "train-vocab: %u tokens (%zu merges) from %.1f MB in %.1f s -> %s\n", vocab.vocab_size(),
            vocab.merges.size(), text.size() / 1e6, seconds, out.c_str());
    if (vocab.vocab_size() < o.vocab_size)
        fprintf(stderr, "train-vocab: warning: the text ran out of pairs before %u tokens\n", o.vocab_size);

    Tokenizer trained = Tokenizer::from_file(out);
    LLMQ_CHECK(trained.decode(trained.encode(heldout)) == heldout, "%s: the saved vocabulary does not round-trip",
               out.c_str());
    if (heldout.empty()) {
        fprintf(stderr, "train-vocab: no held-out text to compare on\n");
        return;
    }
    Tokenizer gpt2 = Tokenizer::from_encoding("gpt2");
    printf("held-out text (%s, %.1f KB): %.3f bytes/token with the new vocabulary (%u tokens), %.3f with gpt2 "
           "(%u tokens)\n",
           heldout_what.c_str(), heldout.size() / 1e3, bytes_per_token(trained, heldout), trained.vocab_size(),
           bytes_per_token(gpt2, heldout), gpt2.vocab_size());
}

std::vector<Command> commands() {
    std::string enc = kEncodingHelp;
    static std::vector<std::string> helps = {
        "usage: tokenizer encode [--encoding NAME | --vocab PATH] [--allow-special] [--text STR | FILE]\n"
        "Encodes the text (of --text, FILE, or stdin) and prints its token ids on one line.\n" +
            enc + "  --allow-special    encode <|endoftext|> etc. as special tokens (default: plain text)\n",
        "usage: tokenizer decode [--encoding NAME | --vocab PATH] [--ids \"IDS\" | FILE]\n"
        "Reads token ids (separated by spaces, newlines or commas) from --ids, FILE or stdin and prints the text.\n" +
            enc,
        "usage: tokenizer batch [--encoding NAME | --vocab PATH] [--allow-special] [--threads N] < lines.jsonl\n"
        "Reads JSON lines {\"text\": \"...\"} on stdin and writes, for each input line and in order, one line of\n"
        "space-separated token ids (an empty line for a blank input line).\n" +
            enc +
            "  --allow-special    encode <|endoftext|> etc. as special tokens (default: plain text)\n"
            "  --threads N        worker threads (default: all)\n",
        "usage: tokenizer shard (--encoding NAME | --vocab PATH) --out DIR [options] INPUTS...\n"
        "Tokenizes text files (directories are walked recursively, in sorted order) into shards\n"
        "DIR/<prefix>_train_NNNNNN.bin and DIR/<prefix>_val_NNNNNN.bin (llm.c's format, see tools/shard.h).\n"
        "Each document is preceded by <|endoftext|>. Prints the shards written, one per line; shards of the\n"
        "same prefix left in DIR by an earlier run are removed. Memory stays bounded whatever the corpus size.\n"
        "  --encoding NAME    gpt2, cl100k_base or o200k_base (one of --encoding, --vocab is required)\n"
        "  --vocab PATH       a vocabulary file instead of a bundled encoding\n"
        "  --out DIR          output directory (created if missing)\n"
            "  --prefix P         shard file name prefix (default: data)\n"
            "  --threads N        encoding threads (default: all); the output does not depend on it\n"
            "  --val-fraction F   fraction of documents for the val split (default: 0.01)\n"
            "  --seed S           seed of the train/val split (default: 0)\n"
            "  --docs MODE        document boundaries: file, blankline (paragraphs; default) or line\n"
            "  --shard-tokens N   tokens per shard (default: 100000000)\n"
            "  --quiet            no progress bar\n",
        "usage: tokenizer train-vocab --size N --out FILE [--pattern NAME] [--heldout FILE] INPUTS...\n"
        "Trains a byte-level BPE vocabulary of N tokens (256 bytes, N-257 merges, <|endoftext|>) on the text\n"
        "files, saves it as tiktoken JSON (load it with --vocab FILE), then prints the bytes per token of the\n"
        "new vocabulary and of gpt2 on held-out text. The training text is held in memory.\n"
        "  --size N           vocabulary size, at least 257\n"
        "  --out FILE         where to save the vocabulary\n"
        "  --pattern NAME     pre-tokenizer: gpt2 (default), cl100k_base or o200k_base\n"
        "  --heldout FILE     text to compare on (default: the last 5% of the input, not trained on)\n"
        "  --threads N        threads for counting (default: all)\n"
        "  --quiet            no progress bar\n",
    };
    return {
        {"encode", helps[0].c_str(), {"--encoding", "--vocab", "--text"}, {"--allow-special"}, run_encode},
        {"decode", helps[1].c_str(), {"--encoding", "--vocab", "--ids"}, {}, run_decode},
        {"batch", helps[2].c_str(), {"--encoding", "--vocab", "--threads"}, {"--allow-special"}, run_batch},
        {"shard",
         helps[3].c_str(),
         {"--encoding", "--vocab", "--out", "--prefix", "--threads", "--val-fraction", "--seed", "--docs",
          "--shard-tokens"},
         {"--quiet"},
         run_shard},
        {"train-vocab",
         helps[4].c_str(),
         {"--size", "--out", "--pattern", "--heldout", "--threads"},
         {"--quiet"},
         run_train_vocab},
    };
}

}  // namespace

int main(int argc, char** argv) {
    try {
        if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
            fputs(kUsage, argc < 2 ? stderr : stdout);
            return argc < 2 ? 1 : 0;
        }
        for (const Command& cmd : commands()) {
            if (cmd.name != std::string(argv[1])) continue;
            for (int i = 2; i < argc; i++) {
                if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
                    fputs(cmd.help, stdout);
                    return 0;
                }
            }
            Args a = parse_args(cmd, argc, argv);
            cmd.run(a);
            LLMQ_CHECK(fflush(stdout) == 0, "stdout: write failed: %s", strerror(errno));
            return 0;
        }
        throw Error(format("unknown command '%s' (see 'tokenizer --help')", argv[1]));
    } catch (const std::exception& e) {
        fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
