// bench_tokenizer: encode throughput of llmq's tokenizer on the bundled corpus (data/text/*.txt), for gpt2,
// cl100k_base and o200k_base, on one thread and on all threads, side by side with tiktoken (the reference
// implementation, Rust) when python3 can import it. tiktoken is built from the same bundled vocabulary files,
// so no download is needed. Prints numbers only; correctness is the tests' job.
//
//   build/dev/bench_tokenizer [threads]
#include <atomic>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "../kernels/common.h"
#include "../tools/json.h"
#include "../tools/ordered_pool.h"
#include "../tools/shard_pipeline.h"
#include "../tools/tokenizer.h"

using namespace llmq;

namespace {

// ~256 KB pieces cut after a newline: the unit of work for the all-threads figure (both implementations).
std::vector<std::string_view> line_chunks(const std::vector<std::string>& texts) {
    std::vector<std::string_view> chunks;
    for (const std::string& t : texts) {
        for (size_t pos = 0; pos < t.size();) {
            size_t end = t.find('\n', std::min(t.size(), pos + (1 << 18)));
            end = end == std::string::npos ? t.size() : end + 1;
            chunks.push_back(std::string_view(t).substr(pos, end - pos));
            pos = end;
        }
    }
    return chunks;
}

struct Result {
    double single_mbps = 0, all_mbps = 0;
    size_t tokens = 0;
};

Result bench_llmq(const Tokenizer& tok, const std::vector<std::string>& texts, size_t bytes, int threads) {
    Result r;
    std::vector<uint32_t> out;
    double t0 = now_seconds();
    for (const std::string& t : texts) {
        out.clear();
        tok.encode_into(t, out);
        r.tokens += out.size();
    }
    r.single_mbps = bytes / 1e6 / (now_seconds() - t0);

    std::vector<std::string_view> chunks = line_chunks(texts);
    std::atomic<size_t> next{0};
    auto worker = [&] {
        std::vector<uint32_t> ids;
        for (size_t c; (c = next++) < chunks.size();) {
            ids.clear();
            tok.encode_into(chunks[c], ids);
        }
    };
    t0 = now_seconds();
    std::vector<std::thread> pool;
    for (int i = 0; i < threads; i++) pool.emplace_back(worker);
    for (auto& th : pool) th.join();
    r.all_mbps = bytes / 1e6 / (now_seconds() - t0);
    return r;
}

// The same measurement with tiktoken, in a python3 child; false if it could not run.
bool bench_tiktoken(const std::string& vocab_json, const std::vector<std::string>& files, int threads, Result& r) {
    std::string script = R"PY(
import base64, json, sys, time, tiktoken
vocab, threads, files = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
d = json.load(open(vocab))
fields = d["bpe_ranks"].split(" ")
first = int(fields[1])
ranks = {base64.b64decode(t): first + i for i, t in enumerate(fields[2:])}
enc = tiktoken.Encoding("bench", pat_str=d["pat_str"], mergeable_ranks=ranks, special_tokens=d["special_tokens"])
texts = [open(f, encoding="utf-8").read() for f in files]
nbytes = sum(len(t.encode("utf-8")) for t in texts)
chunks = []
for t in texts:
    pos = 0
    while pos < len(t):
        end = t.find("\n", min(len(t), pos + (1 << 18)))
        end = len(t) if end < 0 else end + 1
        chunks.append(t[pos:end]); pos = end
t0 = time.perf_counter(); ntok = sum(len(enc.encode_ordinary(t)) for t in texts); t1 = time.perf_counter()
enc.encode_ordinary_batch(chunks, num_threads=threads); t2 = time.perf_counter()
print(nbytes / 1e6 / (t1 - t0), nbytes / 1e6 / (t2 - t1), ntok)
)PY";
    std::string path = "/tmp/llmq_bench_tiktoken.py";
    FILE* f = fopen(path.c_str(), "w");
    if (!f) return false;
    fputs(script.c_str(), f);
    fclose(f);
    std::string cmd = "python3 " + path + " '" + vocab_json + "' " + std::to_string(threads);
    for (const std::string& file : files) cmd += " '" + file + "'";
    FILE* p = popen(cmd.c_str(), "r");
    if (!p) return false;
    bool ok = fscanf(p, "%lf %lf %zu", &r.single_mbps, &r.all_mbps, &r.tokens) == 3;
    ok = pclose(p) == 0 && ok;
    remove(path.c_str());
    return ok;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        int threads = resolve_threads(argc > 1 ? atoi(argv[1]) : 0);
        std::string data = default_data_dir();
        std::vector<std::string> files = list_input_files({data + "/text"});
        std::vector<std::string> texts;
        size_t bytes = 0;
        for (const std::string& f : files) {
            texts.push_back(read_file_bytes(f));
            bytes += texts.back().size();
        }
        bool have_tiktoken = system("python3 -c 'import tiktoken' >/dev/null 2>&1") == 0;
        printf("tokenizer encode throughput: %zu files, %.1f MB (%s/text), %d threads\n", files.size(), bytes / 1e6,
               data.c_str(), threads);
        if (!have_tiktoken) printf("tiktoken not installed (pip install tiktoken): llmq figures only\n");
        printf("%-12s %10s | %12s %12s | %12s %12s | %8s %8s\n", "encoding", "tokens", "llmq 1T MB/s",
               format("llmq %dT MB/s", threads).c_str(), "tikt 1T MB/s", format("tikt %dT MB/s", threads).c_str(),
               "ratio 1T", format("ratio %dT", threads).c_str());
        for (const char* name : {"gpt2", "cl100k_base", "o200k_base"}) {
            Tokenizer tok = Tokenizer::from_encoding(name, data);
            Result ours = bench_llmq(tok, texts, bytes, threads);
            Result peer;
            bool peer_ok = have_tiktoken &&
                           bench_tiktoken(data + "/tokenizers/tiktoken/" + name + ".json", files, threads, peer);
            if (peer_ok) {
                printf("%-12s %10zu | %12.2f %12.2f | %12.2f %12.2f | %8.2f %8.2f%s\n", name, ours.tokens,
                       ours.single_mbps, ours.all_mbps, peer.single_mbps, peer.all_mbps,
                       ours.single_mbps / peer.single_mbps, ours.all_mbps / peer.all_mbps,
                       peer.tokens == ours.tokens ? "" : format("  (tiktoken: %zu tokens!)", peer.tokens).c_str());
            } else {
                printf("%-12s %10zu | %12.2f %12.2f | %12s %12s | %8s %8s\n", name, ours.tokens, ours.single_mbps,
                       ours.all_mbps, "-", "-", "-", "-");
            }
            fflush(stdout);
        }
        printf("ratio = llmq / tiktoken (above 1: llmq is faster)\n");
        return 0;
    } catch (const std::exception& e) {
        fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
