// check_tokenizer_jsonl: compares llmq's Tokenizer with reference ids in a JSON-lines file of the form
// {"text": ..., "gpt2": [...], "cl100k_base": [...], "o200k_base": [...]} (test/data/tiktoken_public.jsonl,
// or one written by dev/tiktoken_cases.py), printing each mismatch with its pre-tokenizer pieces.
// Run from the repository root: build/dev/check_tokenizer_jsonl FILE.jsonl [max_reports]
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "../kernels/common.h"
#include "../tools/json.h"
#include "../tools/tokenizer.h"

using namespace llmq;

static void print_hex(std::string_view bytes) {
    for (unsigned char c : bytes) printf("%02x", c);
}

int main(int argc, char** argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE.jsonl [max_reports]\n", argv[0]);
        return 1;
    }
    try {
        const char* names[] = {"gpt2", "cl100k_base", "o200k_base"};
        std::vector<Tokenizer> toks;
        for (const char* n : names) toks.push_back(Tokenizer::from_encoding(n));
        size_t max_reports = argc > 2 ? strtoul(argv[2], nullptr, 10) : 5;
        std::string lines = read_file_bytes(argv[1]);
        size_t records = 0, mismatches[3] = {0, 0, 0};
        for (size_t pos = 0; pos < lines.size();) {
            size_t end = lines.find('\n', pos);
            if (end == std::string::npos) end = lines.size();
            std::string_view line(lines.data() + pos, end - pos);
            pos = end + 1;
            if (line.empty()) continue;
            JsonValue rec = parse_json(line, std::string(argv[1]) + " line " + std::to_string(records + 1));
            records++;
            const std::string& text = rec.at("text").as_string();
            for (int e = 0; e < 3; e++) {
                std::vector<uint32_t> want;
                for (const JsonValue& id : rec.at(names[e]).as_array()) want.push_back((uint32_t)id.as_int());
                std::vector<uint32_t> got = toks[e].encode(text);
                if (got == want || mismatches[e]++ >= max_reports) continue;
                printf("%s mismatch, record %zu, text (hex) ", names[e], records);
                print_hex(text);
                printf("\n  pieces:");
                for (std::string_view p : pretokenize_pieces(toks[e].pattern(), text)) {
                    printf(" [");
                    print_hex(p);
                    printf("]");
                }
                printf("\n  want:");
                for (uint32_t id : want) printf(" %u", id);
                printf("\n  got: ");
                for (uint32_t id : got) printf(" %u", id);
                printf("\n");
            }
        }
        printf("%zu records; mismatches: gpt2 %zu, cl100k_base %zu, o200k_base %zu\n", records, mismatches[0], mismatches[1],
               mismatches[2]);
        return mismatches[0] + mismatches[1] + mismatches[2] ? 2 : 0;
    } catch (const Error& e) {
        fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
