// shard_pipeline: text files -> token shards (shard.h), the way llm.c's data scripts make them, but
// streaming, multi-threaded and deterministic.
//
//   inputs (files, or directories walked recursively in sorted order)
//     -> documents (--docs: a whole file, paragraphs separated by blank lines, or single lines)
//     -> chunks of ~1 MB of documents, encoded by N worker threads (each document becomes EOT + encode(doc),
//        special tokens in the text are plain text)
//     -> one writer, in input order: each document goes to train or val by a hash of its index and the seed,
//        and the tokens fill shards of shard_tokens tokens (a document may continue into the next shard, as
//        llm.c's fineweb.py does), named <out>/<prefix>_train_000000.bin, <prefix>_val_000000.bin, ...
// The output is byte-identical for any thread count; memory is bounded by the number of chunks in flight
// (2 * threads + 2), whatever the corpus size (except in --docs file mode, where one document is one file).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tokenizer.h"

namespace llmq {

enum class DocSplit {
    File,       // each input file is one document
    BlankLine,  // paragraphs: runs of non-blank lines, separated by one or more blank (whitespace-only) lines
    Line,       // each non-empty line is a document
};
// "file", "blankline", "line" (throws Error naming the flag otherwise).
DocSplit parse_doc_split(const std::string& name);

struct ShardOptions {
    std::string out_dir;          // created if missing
    std::string prefix = "data";  // file names: <prefix>_train_NNNNNN.bin
    int threads = 0;              // worker threads, <= 0 = all hardware threads
    double val_fraction = 0.01;   // expected fraction of documents that go to the val split
    uint64_t seed = 0;            // of the train/val split
    DocSplit docs = DocSplit::BlankLine;
    int64_t shard_tokens = 100'000'000;
    size_t chunk_bytes = 1 << 20;  // text per work item
    bool progress = true;          // progress bar on stderr
};

struct ShardStats {
    int64_t docs_train = 0, docs_val = 0;
    int64_t tokens_train = 0, tokens_val = 0;
    int64_t input_bytes = 0;
    double seconds = 0;
    std::vector<std::string> shards;  // paths written, train then val, in order
    int stale_removed = 0;            // old <prefix>_*_NNNNNN.bin files of a previous run that were removed
};

// The files named by inputs, in order; a directory contributes its regular files, recursively, sorted by
// path. Throws Error naming a missing or unreadable input.
std::vector<std::string> list_input_files(const std::vector<std::string>& inputs);

// Whether document number doc_index (0-based over the whole input) goes to the val split.
bool is_val_document(uint64_t doc_index, uint64_t seed, double val_fraction);

// Tokenizes the inputs into shards under opts.out_dir. On failure nothing partial is left under a shard's
// final name. After success, shards of the same prefix left by an earlier run and not rewritten are removed,
// so the directory holds exactly this run's shards.
ShardStats shard_corpus(const Tokenizer& tok, const std::vector<std::string>& inputs, const ShardOptions& opts);

// One line: "N documents (V val), T tokens (train A, val B) in S shards, X MB in Y s, Z MB/s".
std::string shard_summary(const ShardStats& s);

}  // namespace llmq
