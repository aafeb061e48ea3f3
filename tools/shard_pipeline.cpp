// shard_pipeline.cpp: text -> documents -> parallel encoding -> ordered shard writing (see shard_pipeline.h).
#include "shard_pipeline.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <set>

#include "../kernels/common.h"
#include "ordered_pool.h"
#include "progress.h"
#include "shard.h"

namespace llmq {

namespace fs = std::filesystem;

DocSplit parse_doc_split(const std::string& name) {
    if (name == "file") return DocSplit::File;
    if (name == "blankline") return DocSplit::BlankLine;
    if (name == "line") return DocSplit::Line;
    throw Error(format("--docs: unknown document split '%s' (expected file, blankline or line)", name.c_str()));
}

std::vector<std::string> list_input_files(const std::vector<std::string>& inputs) {
    std::vector<std::string> files;
    for (const std::string& in : inputs) {
        std::error_code ec;
        fs::file_status st = fs::status(in, ec);
        LLMQ_CHECK(!ec && fs::exists(st), "%s: no such file or directory", in.c_str());
        if (fs::is_directory(st)) {
            std::vector<std::string> found;
            fs::recursive_directory_iterator it(in, ec), end;
            LLMQ_CHECK(!ec, "%s: cannot read directory: %s", in.c_str(), ec.message().c_str());
            for (; it != end; it.increment(ec)) {
                LLMQ_CHECK(!ec, "%s: cannot read directory: %s", in.c_str(), ec.message().c_str());
                if (it->is_regular_file()) found.push_back(it->path().string());
            }
            std::sort(found.begin(), found.end());
            files.insert(files.end(), found.begin(), found.end());
        } else {
            files.push_back(in);
        }
    }
    for (const std::string& f : files) {
        FILE* probe = fopen(f.c_str(), "rb");
        LLMQ_CHECK(probe, "%s: cannot read: %s", f.c_str(), strerror(errno));
        fclose(probe);
    }
    return files;
}

bool is_val_document(uint64_t doc_index, uint64_t seed, double val_fraction) {
    Rng a(doc_index), b(seed ^ a.next_u64());  // splitmix64 of the index, mixed with the seed, mixed again
    double u = (b.next_u64() >> 11) * (1.0 / 9007199254740992.0);  // [0, 1)
    return u < val_fraction;
}

namespace {

// A work item: documents concatenated in text, document d is text[offsets[d], offsets[d+1]).
struct Chunk {
    std::string text;
    std::vector<size_t> offsets;
    uint64_t first_doc = 0;
    int64_t input_bytes = 0;
    size_t num_docs() const { return offsets.empty() ? 0 : offsets.size() - 1; }
};

struct EncodedChunk {
    std::vector<uint32_t> train, val;
    int64_t docs_train = 0, docs_val = 0;
};

bool is_blank(const char* s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n' && s[i] != '\f' && s[i] != '\v') return false;
    return true;
}

// Reads the input files in order and cuts them into documents, a chunk at a time.
class DocumentReader {
  public:
    DocumentReader(std::vector<std::string> files, DocSplit mode, size_t chunk_bytes)
        : files_(std::move(files)), mode_(mode), chunk_bytes_(chunk_bytes) {}
    ~DocumentReader() {
        if (file_) fclose(file_);
        free(line_);
    }

    // Fills chunk with the next documents (at least one, about chunk_bytes of text); false at the end.
    bool next(Chunk& chunk) {
        chunk.text.clear();
        chunk.offsets.assign(1, 0);
        chunk.first_doc = next_doc_;
        chunk.input_bytes = 0;
        in_doc_ = false;
        while (chunk.text.size() < chunk_bytes_ || in_doc_) {  // a chunk ends at a document boundary
            if (!file_ && !open_next()) break;
            if (!read_some(chunk)) close_current(chunk);
        }
        end_doc(chunk);
        return chunk.num_docs() > 0;
    }

  private:
    bool open_next() {
        if (next_file_ >= files_.size()) return false;
        path_ = files_[next_file_++];
        file_ = fopen(path_.c_str(), "rb");
        LLMQ_CHECK(file_, "%s: cannot read: %s", path_.c_str(), strerror(errno));
        return true;
    }
    void close_current(Chunk& chunk) {
        bool failed = ferror(file_);
        fclose(file_);
        file_ = nullptr;
        LLMQ_CHECK(!failed, "%s: read error", path_.c_str());
        end_doc(chunk);  // documents never span files
    }
    void end_doc(Chunk& chunk) {
        if (!in_doc_) return;
        chunk.offsets.push_back(chunk.text.size());
        next_doc_++;
        in_doc_ = false;
    }
    void add_to_doc(Chunk& chunk, const char* s, size_t n, bool newline_before) {
        if (in_doc_ && newline_before) chunk.text.push_back('\n');
        chunk.text.append(s, n);
        in_doc_ = true;
    }
    // Reads one line (or, in file mode, one block) into the current document; false at the end of the file.
    bool read_some(Chunk& chunk) {
        if (mode_ == DocSplit::File) {
            char buf[1 << 16];
            size_t n = fread(buf, 1, sizeof buf, file_);
            chunk.input_bytes += n;
            if (n > 0) add_to_doc(chunk, buf, n, false);
            return n > 0;
        }
        ssize_t len = getline(&line_, &line_cap_, file_);
        if (len < 0) return false;
        chunk.input_bytes += len;
        size_t n = (size_t)len;
        if (n > 0 && line_[n - 1] == '\n') n--;
        if (mode_ == DocSplit::Line) {
            if (n > 0) {
                add_to_doc(chunk, line_, n, false);
                end_doc(chunk);
            }
        } else if (is_blank(line_, n)) {
            end_doc(chunk);
        } else {
            add_to_doc(chunk, line_, n, true);
        }
        return true;
    }

    std::vector<std::string> files_;
    DocSplit mode_;
    size_t chunk_bytes_;
    size_t next_file_ = 0;
    std::string path_;
    FILE* file_ = nullptr;
    char* line_ = nullptr;
    size_t line_cap_ = 0;
    uint64_t next_doc_ = 0;
    bool in_doc_ = false;
};

// One split's sequence of shards: tokens fill <prefix>_<split>_NNNNNN.bin up to shard_tokens each.
class ShardSequence {
  public:
    ShardSequence(std::string stem, int64_t shard_tokens, const Tokenizer& tok, std::vector<std::string>& written)
        : stem_(std::move(stem)), shard_tokens_(shard_tokens), tok_(tok), written_(written) {}

    void append(const std::vector<uint32_t>& tokens) {
        size_t pos = 0;
        while (pos < tokens.size()) {
            if (!writer_) {
                std::string path = format("%s_%06d.bin", stem_.c_str(), index_++);
                writer_ = std::make_unique<ShardWriter>(path, tok_.vocab_size(), (int32_t)tok_.eot_id());
            }
            size_t take = std::min<size_t>(tokens.size() - pos, shard_tokens_ - writer_->num_tokens());
            writer_->append(tokens.data() + pos, take);
            pos += take;
            if (writer_->num_tokens() == shard_tokens_) close();
        }
    }
    void close() {
        if (!writer_) return;
        writer_->close();
        written_.push_back(writer_->path());
        writer_.reset();
    }

  private:
    std::string stem_;
    int64_t shard_tokens_;
    const Tokenizer& tok_;
    std::vector<std::string>& written_;
    std::unique_ptr<ShardWriter> writer_;
    int index_ = 0;
};

// Removes <prefix>_(train|val)_NNNNNN.bin files in dir that this run did not write.
int remove_stale_shards(const std::string& dir, const std::string& prefix, const std::vector<std::string>& written) {
    std::set<std::string> keep;
    for (const std::string& p : written) keep.insert(fs::path(p).filename().string());
    int removed = 0;
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(dir, ec)) {
        std::string name = entry.path().filename().string();
        bool ours = name.compare(0, prefix.size(), prefix) == 0 && name.size() >= 4 &&
                    name.compare(name.size() - 4, 4, ".bin") == 0;
        if (!ours) continue;
        std::string rest = name.substr(prefix.size(), name.size() - prefix.size() - 4);  // _train_000001
        std::string digits;
        if (rest.rfind("_train_", 0) == 0) digits = rest.substr(7);
        else if (rest.rfind("_val_", 0) == 0) digits = rest.substr(5);
        else continue;
        if (digits.size() != 6 || digits.find_first_not_of("0123456789") != std::string::npos) continue;
        if (keep.count(name)) continue;
        if (fs::remove(entry.path(), ec)) removed++;
    }
    return removed;
}

}  // namespace

ShardStats shard_corpus(const Tokenizer& tok, const std::vector<std::string>& inputs, const ShardOptions& opts) {
    LLMQ_CHECK(!inputs.empty(), "shard: no input files given");
    LLMQ_CHECK(opts.shard_tokens > 0 && opts.shard_tokens <= 0x7fffffff,
               "--shard-tokens: %lld is out of range (1 to 2^31-1)", (long long)opts.shard_tokens);
    LLMQ_CHECK(opts.val_fraction >= 0 && opts.val_fraction <= 1, "--val-fraction: %g is not in [0, 1]",
               opts.val_fraction);
    LLMQ_CHECK(!opts.out_dir.empty(), "--out: no output directory given");
    LLMQ_CHECK(tok.eot_id() != Tokenizer::kNoToken, "%s: the vocabulary has no end-of-text token to separate documents",
               tok.name().c_str());
    std::vector<std::string> files = list_input_files(inputs);
    std::error_code ec;
    fs::create_directories(opts.out_dir, ec);
    LLMQ_CHECK(!ec && fs::is_directory(opts.out_dir), "%s: cannot create output directory: %s", opts.out_dir.c_str(),
               ec ? ec.message().c_str() : "not a directory");

    ShardStats stats;
    for (const std::string& f : files) {
        uintmax_t size = fs::file_size(f, ec);
        if (!ec) stats.input_bytes += (int64_t)size;  // for the progress bar; a pipe has no size
    }
    double start = now_seconds();
    std::unique_ptr<Progress> bar;
    if (opts.progress) bar = std::make_unique<Progress>("shard", (double)stats.input_bytes, Progress::Bytes);

    std::string stem = opts.out_dir + "/" + opts.prefix;
    std::vector<std::string> train_written, val_written;
    ShardSequence train(stem + "_train", opts.shard_tokens, tok, train_written);
    ShardSequence val(stem + "_val", opts.shard_tokens, tok, val_written);
    DocumentReader reader(files, opts.docs, opts.chunk_bytes);
    const uint32_t eot = tok.eot_id();
    int threads = resolve_threads(opts.threads);
    int64_t read_bytes = 0;

    run_ordered<Chunk, EncodedChunk>(
        threads, 2 * (size_t)threads + 2,
        [&](Chunk& c) { return reader.next(c); },
        [&](Chunk& c, EncodedChunk& r) {
            r.train.clear();
            r.val.clear();
            r.docs_train = r.docs_val = 0;
            for (size_t d = 0; d < c.num_docs(); d++) {
                bool to_val = is_val_document(c.first_doc + d, opts.seed, opts.val_fraction);
                std::vector<uint32_t>& out = to_val ? r.val : r.train;
                (to_val ? r.docs_val : r.docs_train)++;
                out.push_back(eot);
                tok.encode_into(std::string_view(c.text).substr(c.offsets[d], c.offsets[d + 1] - c.offsets[d]), out);
            }
        },
        [&](Chunk& c, EncodedChunk& r) {
            train.append(r.train);
            val.append(r.val);
            stats.docs_train += r.docs_train;
            stats.docs_val += r.docs_val;
            stats.tokens_train += r.train.size();
            stats.tokens_val += r.val.size();
            read_bytes += c.input_bytes;
            if (bar) bar->update((double)read_bytes);
        });
    train.close();
    val.close();
    if (bar) bar->finish();
    stats.seconds = now_seconds() - start;
    stats.shards = train_written;
    stats.shards.insert(stats.shards.end(), val_written.begin(), val_written.end());
    stats.stale_removed = remove_stale_shards(opts.out_dir, opts.prefix, stats.shards);
    return stats;
}

std::string shard_summary(const ShardStats& s) {
    double mb = s.input_bytes / 1e6;
    return format("%lld documents (%lld val), %lld tokens (train %lld, val %lld) in %zu shards, %.1f MB in %.2f s, "
                  "%.1f MB/s",
                  (long long)(s.docs_train + s.docs_val), (long long)s.docs_val,
                  (long long)(s.tokens_train + s.tokens_val), (long long)s.tokens_train, (long long)s.tokens_val,
                  s.shards.size(), mb, s.seconds, s.seconds > 0 ? mb / s.seconds : 0.0);
}

}  // namespace llmq
