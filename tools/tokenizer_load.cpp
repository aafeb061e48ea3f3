// tokenizer_load.cpp: reads vocabulary files into a TokenizerSpec (tokenizer.h) and finds data/.
//
// Formats:
//   tiktoken JSON   {"pat_str", "special_tokens": {text: id}, "bpe_ranks": "! 0 <b64> <b64> ...",
//                   "explicit_n_vocab"?}: ranks are consecutive from the second field; id = rank.
//   .tiktoken       lines "<b64 bytes> <rank>"; id = rank.
//   GPT-2           encoder.json {token: id} + vocab.bpe (merges, one "a b" per line). Both name bytes
//                   through GPT-2's byte-to-unicode map. As tiktoken does, ranks are the 256 bytes
//                   then the merges in file order; ids come from encoder.json.
//   HF tokenizer    tokenizer.json with model.vocab {token: id}, model.merges ("a b" or ["a", "b"]),
//                   added_tokens [{id, content}] (special tokens); byte-level, ranked as GPT-2's.
#include <algorithm>
#include <climits>
#include <functional>
#include <cstdlib>
#include <map>
#include <unistd.h>
#include <unordered_map>
#include <unordered_set>

#include "../kernels/common.h"
#include "json.h"
#include "tokenizer.h"

namespace llmq {

// ---- helpers --------------------------------------------------------------------------------------

static bool ends_with(const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
static std::string dir_of(const std::string& path) {
    size_t slash = path.rfind('/');
    return slash == std::string::npos ? "." : path.substr(0, slash);
}
static std::string base_of(const std::string& path) {
    size_t slash = path.rfind('/');
    return slash == std::string::npos ? path : path.substr(slash + 1);
}
static bool file_exists(const std::string& path) { return access(path.c_str(), R_OK) == 0; }

// The pattern of a vocabulary that does not carry one: by its name.
static PretokenPattern pattern_from_name(const std::string& name) {
    std::string base = base_of(name);
    if (base.find("o200k") != std::string::npos) return PretokenPattern::O200K;
    if (base.find("cl100k") != std::string::npos) return PretokenPattern::CL100K;
    return PretokenPattern::GPT2;
}

// Strict base64 (standard alphabet, '=' padding to a multiple of 4). Throws Error naming `what`.
static std::string base64_decode(std::string_view s, const std::string& what) {
    static int8_t value[256];
    static bool ready = false;
    if (!ready) {
        std::fill(value, value + 256, -1);
        const char* alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        for (int i = 0; i < 64; i++) value[(unsigned char)alphabet[i]] = (int8_t)i;
        ready = true;
    }
    auto bad = [&]() { return Error(format("%s: bad base64 \"%.*s\"", what.c_str(), (int)std::min<size_t>(s.size(), 80), s.data())); };
    if (s.empty() || s.size() % 4 != 0) throw bad();
    size_t pad = s[s.size() - 1] == '=' ? (s[s.size() - 2] == '=' ? 2 : 1) : 0;
    std::string out;
    out.reserve(s.size() / 4 * 3);
    for (size_t i = 0; i < s.size(); i += 4) {
        uint32_t v = 0;
        for (size_t k = 0; k < 4; k++) {
            bool is_pad = i + k >= s.size() - pad;
            int d = is_pad ? 0 : value[(unsigned char)s[i + k]];
            if (d < 0 || (is_pad && s[i + k] != '=')) throw bad();
            v = (v << 6) | (uint32_t)d;
        }
        out += (char)(v >> 16);
        out += (char)(v >> 8);
        out += (char)v;
    }
    out.resize(out.size() - pad);
    return out;
}

static uint32_t parse_u32(std::string_view s, const std::string& what) {
    uint64_t v = 0;
    if (s.empty() || s.size() > 10) throw Error(format("%s: bad number \"%.*s\"", what.c_str(), (int)s.size(), s.data()));
    for (char c : s) {
        if (c < '0' || c > '9') throw Error(format("%s: bad number \"%.*s\"", what.c_str(), (int)s.size(), s.data()));
        v = v * 10 + (uint64_t)(c - '0');
    }
    if (v >= 0x7FFFFFFF) throw Error(format("%s: number %llu too large", what.c_str(), (unsigned long long)v));
    return (uint32_t)v;
}

// Runs f; an Error from it (a JSON accessor's "JSON: missing key ...") is rethrown prefixed with path.
template <typename F>
static auto with_file_context(const std::string& path, F&& f) -> decltype(f()) {
    try {
        return f();
    } catch (const Error& e) {
        std::string msg = e.what();
        if (msg.compare(0, path.size(), path) == 0) throw;
        throw Error(path + ": " + msg);
    }
}

// GPT-2's byte-to-unicode map: printable bytes stand for themselves, the others for U+0100 onwards.
// byte_order lists bytes in tiktoken's rank order for GPT-2 (printable first).
struct ByteUnicodeMap {
    uint32_t code_of_byte[256];
    std::unordered_map<uint32_t, uint8_t> byte_of_code;
    std::vector<uint8_t> byte_order;
    ByteUnicodeMap() {
        auto printable = [](int b) { return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF); };
        uint32_t extra = 256;
        for (int b = 0; b < 256; b++)
            if (printable(b)) byte_order.push_back((uint8_t)b);
        for (int b = 0; b < 256; b++)
            if (!printable(b)) byte_order.push_back((uint8_t)b);
        for (int b = 0; b < 256; b++) code_of_byte[b] = printable(b) ? (uint32_t)b : extra++;
        for (int b = 0; b < 256; b++) byte_of_code[code_of_byte[b]] = (uint8_t)b;
    }
    // The bytes a mapped token string stands for; false when it has a character outside the map.
    bool decode(const std::string& s, std::string& out) const {
        out.clear();
        const unsigned char* p = (const unsigned char*)s.data();
        for (size_t i = 0; i < s.size();) {
            uint32_t cp;
            if (p[i] < 0x80) { cp = p[i]; i += 1; }
            else if ((p[i] & 0xE0) == 0xC0 && i + 1 < s.size()) { cp = ((p[i] & 0x1Fu) << 6) | (p[i + 1] & 0x3Fu); i += 2; }
            else return false;  // the map only uses code points below U+0800
            auto it = byte_of_code.find(cp);
            if (it == byte_of_code.end()) return false;
            out += (char)it->second;
        }
        return true;
    }
    std::string encode_byte(uint8_t b) const {
        uint32_t cp = code_of_byte[b];
        std::string s;
        if (cp < 0x80) s += (char)cp;
        else { s += (char)(0xC0 | (cp >> 6)); s += (char)(0x80 | (cp & 0x3F)); }
        return s;
    }
};
static const ByteUnicodeMap& byte_unicode_map() {
    static const ByteUnicodeMap map;
    return map;
}

// Ranks for a merges-based vocabulary (GPT-2, HF): the 256 bytes, then each merge's result in order
// (a result seen before keeps its first rank). vocab maps the mapped token strings to ids; entries
// no merge produces become extra tokens, or special tokens when listed in `specials`.
static void rank_by_merges(const std::string& path, const std::unordered_map<std::string, uint32_t>& vocab,
                           const std::vector<std::pair<std::string, std::string>>& merges,
                           const std::unordered_set<std::string>& specials, TokenizerSpec& spec) {
    const ByteUnicodeMap& map = byte_unicode_map();
    std::unordered_set<std::string> ranked;  // mapped strings
    auto add_ranked = [&](const std::string& mapped, const std::string& bytes) {
        auto it = vocab.find(mapped);
        LLMQ_CHECK(it != vocab.end(), "%s: token \"%.60s\" is not in the vocabulary", path.c_str(), mapped.c_str());
        spec.ranked_tokens.push_back(bytes);
        spec.ranked_ids.push_back(it->second);
        ranked.insert(mapped);
    };
    for (uint8_t b : map.byte_order) add_ranked(map.encode_byte(b), std::string(1, (char)b));
    std::string left, right;
    for (size_t i = 0; i < merges.size(); i++) {
        const auto& m = merges[i];
        LLMQ_CHECK(map.decode(m.first, left) && map.decode(m.second, right),
                   "%s: merge %zu (\"%.40s\" \"%.40s\") is not byte-level BPE", path.c_str(), i + 1, m.first.c_str(), m.second.c_str());
        std::string mapped = m.first + m.second;
        if (ranked.count(mapped)) continue;
        add_ranked(mapped, left + right);
    }
    std::string bytes;
    for (auto& [token, id] : vocab) {
        if (ranked.count(token)) continue;
        if (specials.count(token)) spec.special_tokens.push_back({token, id});
        else if (map.decode(token, bytes)) spec.extra_tokens.push_back({bytes, id});
        else spec.special_tokens.push_back({token, id});  // e.g. "<s>"-like names outside the byte map
    }
}

// ---- formats --------------------------------------------------------------------------------------

static TokenizerSpec load_tiktoken_json(const JsonValue& doc, const std::string& path, const std::string& name) {
    return with_file_context(path, [&]() {
        TokenizerSpec spec;
        spec.name = name;
        spec.pattern = pretoken_pattern_from_regex(doc.at("pat_str").as_string(), path);
        const std::string& ranks = doc.at("bpe_ranks").as_string();
        size_t field = 0, first_rank = 0;
        for (size_t pos = 0; pos <= ranks.size();) {
            size_t end = ranks.find(' ', pos);
            if (end == std::string::npos) end = ranks.size();
            std::string_view f(ranks.data() + pos, end - pos);
            if (field == 1) first_rank = parse_u32(f, path + ": bpe_ranks first rank");
            else if (field >= 2) spec.ranked_tokens.push_back(base64_decode(f, path + ": bpe_ranks token " + std::to_string(field - 2)));
            field++;
            pos = end + 1;
        }
        LLMQ_CHECK(field >= 3, "%s: bpe_ranks holds no tokens", path.c_str());
        if (first_rank != 0)
            for (size_t r = 0; r < spec.ranked_tokens.size(); r++) spec.ranked_ids.push_back((uint32_t)(first_rank + r));
        for (auto& [text, id] : doc.at("special_tokens").as_object())
            spec.special_tokens.push_back({text, (uint32_t)id.as_int()});
        if (const JsonValue* n = doc.find("explicit_n_vocab")) spec.vocab_size = (uint32_t)n->as_int();
        return spec;
    });
}

static TokenizerSpec load_tiktoken_ranks(const std::string& path) {
    std::string text = read_file_bytes(path);
    std::vector<std::pair<uint32_t, std::string>> rank_bytes;
    size_t line_no = 0;
    for (size_t pos = 0; pos < text.size();) {
        size_t end = text.find('\n', pos);
        if (end == std::string::npos) end = text.size();
        std::string_view line(text.data() + pos, end - pos);
        pos = end + 1;
        line_no++;
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        if (line.empty()) continue;
        size_t space = line.find(' ');
        std::string where = path + ":" + std::to_string(line_no);
        LLMQ_CHECK(space != std::string_view::npos, "%s: expected \"<base64> <rank>\"", where.c_str());
        rank_bytes.push_back({parse_u32(line.substr(space + 1), where), base64_decode(line.substr(0, space), where)});
    }
    std::sort(rank_bytes.begin(), rank_bytes.end());
    TokenizerSpec spec;
    spec.name = path;
    spec.pattern = pattern_from_name(path);
    for (auto& [rank, bytes] : rank_bytes) {
        LLMQ_CHECK(spec.ranked_ids.empty() || spec.ranked_ids.back() != rank, "%s: rank %u given twice", path.c_str(), rank);
        spec.ranked_ids.push_back(rank);
        spec.ranked_tokens.push_back(std::move(bytes));
    }
    LLMQ_CHECK(!spec.ranked_ids.empty(), "%s: no tokens", path.c_str());
    std::string base = base_of(path);
    if (spec.pattern == PretokenPattern::CL100K)
        spec.special_tokens = {{"<|endoftext|>", 100257}, {"<|fim_prefix|>", 100258}, {"<|fim_middle|>", 100259},
                               {"<|fim_suffix|>", 100260}, {"<|endofprompt|>", 100276}};
    else if (spec.pattern == PretokenPattern::O200K)
        spec.special_tokens = {{"<|endoftext|>", 199999}, {"<|endofprompt|>", 200018}};
    else
        spec.special_tokens = {{"<|endoftext|>", spec.ranked_ids.back() + 1}};
    return spec;
}

static TokenizerSpec load_gpt2(const std::string& encoder_path, const std::string& vocab_bpe_path) {
    JsonValue doc = parse_json_file(encoder_path);
    std::unordered_map<std::string, uint32_t> vocab;
    with_file_context(encoder_path, [&]() {
        for (auto& [token, id] : doc.as_object()) vocab[token] = (uint32_t)id.as_int();
    });
    std::string text = read_file_bytes(vocab_bpe_path);
    std::vector<std::pair<std::string, std::string>> merges;
    size_t line_no = 0;
    for (size_t pos = 0; pos < text.size();) {
        size_t end = text.find('\n', pos);
        if (end == std::string::npos) end = text.size();
        std::string line = text.substr(pos, end - pos);
        pos = end + 1;
        line_no++;
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.empty() || (line_no == 1 && line.compare(0, 9, "#version:") == 0)) continue;
        size_t space = line.find(' ');
        LLMQ_CHECK(space != std::string::npos && space > 0 && space + 1 < line.size() && line.find(' ', space + 1) == std::string::npos,
                   "%s:%zu: expected a merge \"a b\"", vocab_bpe_path.c_str(), line_no);
        merges.push_back({line.substr(0, space), line.substr(space + 1)});
    }
    TokenizerSpec spec;
    spec.name = encoder_path;
    spec.pattern = pattern_from_name(encoder_path);
    rank_by_merges(encoder_path, vocab, merges, {"<|endoftext|>"}, spec);
    return spec;
}

static TokenizerSpec load_hf(const JsonValue& doc, const std::string& path) {
    return with_file_context(path, [&]() {
        const JsonValue& model = doc.at("model");
        if (const JsonValue* type = model.find("type"))
            LLMQ_CHECK(type->as_string() == "BPE", "%s: model type %s is not BPE", path.c_str(), type->as_string().c_str());
        std::unordered_map<std::string, uint32_t> vocab;
        for (auto& [token, id] : model.at("vocab").as_object()) vocab[token] = (uint32_t)id.as_int();
        std::vector<std::pair<std::string, std::string>> merges;
        for (const JsonValue& m : model.at("merges").as_array()) {
            if (m.is_array()) {
                LLMQ_CHECK(m.size() == 2, "%s: a merge pair must have 2 elements", path.c_str());
                merges.push_back({m.at(0).as_string(), m.at(1).as_string()});
            } else {
                const std::string& s = m.as_string();
                size_t space = s.find(' ');
                LLMQ_CHECK(space != std::string::npos && space > 0 && space + 1 < s.size() && s.find(' ', space + 1) == std::string::npos,
                           "%s: merge \"%.60s\" is not \"a b\"", path.c_str(), s.c_str());
                merges.push_back({s.substr(0, space), s.substr(space + 1)});
            }
        }
        std::unordered_set<std::string> specials;
        if (const JsonValue* added = doc.find("added_tokens"); added && !added->is_null())
            for (const JsonValue& t : added->as_array()) {
                const std::string& content = t.at("content").as_string();
                specials.insert(content);
                vocab[content] = (uint32_t)t.at("id").as_int();
            }
        TokenizerSpec spec;
        spec.name = path;
        spec.pattern = pattern_from_name(path);
        // A Split pre-tokenizer carries its regex; plain ByteLevel means GPT-2's.
        std::function<void(const JsonValue&)> find_split = [&](const JsonValue& v) {
            if (v.is_array()) for (auto& e : v.as_array()) find_split(e);
            if (!v.is_object()) return;
            const JsonValue* type = v.find("type");
            const JsonValue* pattern = v.find("pattern");
            if (type && type->is_string() && type->as_string() == "Split" && pattern && pattern->find("Regex"))
                spec.pattern = pretoken_pattern_from_regex(pattern->at("Regex").as_string(), path);
            if (const JsonValue* inner = v.find("pretokenizers")) find_split(*inner);
        };
        if (const JsonValue* pre = doc.find("pre_tokenizer")) find_split(*pre);
        rank_by_merges(path, vocab, merges, specials, spec);
        return spec;
    });
}

// ---- entry points ---------------------------------------------------------------------------------

std::string default_data_dir() {
    if (const char* env = getenv("LLMQ_DATA"); env && *env) return env;
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        std::string dir = dir_of(exe) + "/data";
        if (file_exists(dir)) return dir;
    }
    return "./data";
}

Tokenizer Tokenizer::from_encoding(const std::string& name, const std::string& data_dir) {
    LLMQ_CHECK(name == "gpt2" || name == "cl100k_base" || name == "o200k_base",
               "unknown encoding \"%s\" (known: gpt2, cl100k_base, o200k_base)", name.c_str());
    std::string path = (data_dir.empty() ? default_data_dir() : data_dir) + "/tokenizers/tiktoken/" + name + ".json";
    LLMQ_CHECK(file_exists(path), "encoding %s: cannot read %s (set LLMQ_DATA to the data/ directory)", name.c_str(), path.c_str());
    return from_spec(load_tiktoken_json(parse_json_file(path), path, name));
}

Tokenizer Tokenizer::from_file(const std::string& path) {
    LLMQ_CHECK(file_exists(path), "%s: cannot read the vocabulary file", path.c_str());
    if (ends_with(path, ".tiktoken")) return from_spec(load_tiktoken_ranks(path));
    if (ends_with(path, ".bpe")) {
        std::string encoder = dir_of(path) + "/encoder.json";
        LLMQ_CHECK(file_exists(encoder), "%s: GPT-2 merges need encoder.json beside them (%s)", path.c_str(), encoder.c_str());
        return from_spec(load_gpt2(encoder, path));
    }
    std::string text = read_file_bytes(path);
    size_t first = text.find_first_not_of(" \t\r\n");
    if (first != std::string::npos && text[first] == '{') {
        JsonValue doc = parse_json(text, path);
        // (keys checked with their types: GPT-2's encoder.json has a token named "model")
        if (const JsonValue* r = doc.find("bpe_ranks"); r && r->is_string()) return from_spec(load_tiktoken_json(doc, path, path));
        if (const JsonValue* m = doc.find("model"); m && m->is_object()) return from_spec(load_hf(doc, path));
        bool all_ints = doc.size() > 0;
        for (auto& m : doc.as_object()) all_ints = all_ints && m.second.is_number();
        if (all_ints) {
            std::string merges = dir_of(path) + "/vocab.bpe";
            LLMQ_CHECK(file_exists(merges), "%s: a GPT-2 encoder.json needs vocab.bpe beside it (%s)", path.c_str(), merges.c_str());
            doc = JsonValue();
            return from_spec(load_gpt2(path, merges));
        }
        throw Error(format("%s: unrecognised JSON vocabulary (expected tiktoken bpe_ranks, HF model, or GPT-2 encoder.json)", path.c_str()));
    }
    return from_spec(load_tiktoken_ranks(path));  // its errors name the line that is not "<base64> <rank>"
}

}  // namespace llmq
