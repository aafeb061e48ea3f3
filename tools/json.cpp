// json.cpp: the recursive-descent parser behind json.h, and the JsonValue accessors.
//
// One pass over the bytes with a cursor; every error reports the cursor's byte offset. Strings are
// decoded in place into std::string (escapes resolved, UTF-8 validated), numbers are checked against
// the JSON grammar first and then converted with std::from_chars (locale-independent).
#include "json.h"

#include <charconv>
#include <cmath>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "../kernels/common.h"

namespace llmq {

// ---- accessors ------------------------------------------------------------------------------------

const char* JsonValue::type_name(Type t) {
    switch (t) {
        case Type::Null: return "null";
        case Type::Bool: return "bool";
        case Type::Number: return "number";
        case Type::String: return "string";
        case Type::Array: return "array";
        case Type::Object: return "object";
    }
    return "?";
}

static void expect_type(JsonValue::Type want, JsonValue::Type got) {
    LLMQ_CHECK(want == got, "JSON: expected %s, got %s", JsonValue::type_name(want), JsonValue::type_name(got));
}

bool JsonValue::as_bool() const { expect_type(Type::Bool, type_); return bool_; }
double JsonValue::as_number() const { expect_type(Type::Number, type_); return number_; }
const std::string& JsonValue::as_string() const { expect_type(Type::String, type_); return string_; }
const std::vector<JsonValue>& JsonValue::as_array() const { expect_type(Type::Array, type_); return array_; }
const std::vector<JsonValue::Member>& JsonValue::as_object() const { expect_type(Type::Object, type_); return object_; }

int64_t JsonValue::as_int() const {
    double x = as_number();
    LLMQ_CHECK(std::floor(x) == x && std::fabs(x) <= 9007199254740992.0, "JSON: expected an integer, got %.17g", x);
    return (int64_t)x;
}

const JsonValue* JsonValue::find(std::string_view key) const {
    if (type_ != Type::Object) return nullptr;
    for (const Member& m : object_)
        if (m.first == key) return &m.second;
    return nullptr;
}

const JsonValue& JsonValue::at(std::string_view key) const {
    expect_type(Type::Object, type_);
    const JsonValue* v = find(key);
    LLMQ_CHECK(v, "JSON: missing key \"%.*s\"", (int)key.size(), key.data());
    return *v;
}

const JsonValue& JsonValue::at(size_t index) const {
    expect_type(Type::Array, type_);
    LLMQ_CHECK(index < array_.size(), "JSON: index %zu past the array's %zu elements", index, array_.size());
    return array_[index];
}

size_t JsonValue::size() const {
    if (type_ == Type::Array) return array_.size();
    if (type_ == Type::Object) return object_.size();
    return 0;
}

// ---- parser ---------------------------------------------------------------------------------------

class JsonParser {
  public:
    JsonParser(std::string_view text, const std::string& source) : s_(text), source_(source) {}

    JsonValue parse_document() {
        JsonValue v;
        skip_space();
        parse_value(v, 0);
        skip_space();
        if (pos_ != s_.size()) fail("unexpected content after the value");
        return v;
    }

  private:
    static constexpr int kMaxDepth = 512;
    std::string_view s_;
    const std::string& source_;
    size_t pos_ = 0;

    [[noreturn]] void fail(const char* problem) const {
        throw Error(format("%s: invalid JSON at byte %zu: %s", source_.c_str(), pos_, problem));
    }
    bool at_end() const { return pos_ >= s_.size(); }
    char peek() const { return at_end() ? '\0' : s_[pos_]; }

    void skip_space() {
        while (!at_end()) {
            char c = s_[pos_];
            if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
            pos_++;
        }
    }

    void expect_literal(std::string_view word) {
        if (s_.substr(pos_, word.size()) != word) fail("unexpected character");
        pos_ += word.size();
    }

    void parse_value(JsonValue& out, int depth) {
        if (at_end()) fail("unexpected end of input");
        if (depth > kMaxDepth) fail("nesting deeper than 512");
        char c = s_[pos_];
        switch (c) {
            case '{': parse_object(out, depth); return;
            case '[': parse_array(out, depth); return;
            case '"': out.type_ = JsonValue::Type::String; parse_string(out.string_); return;
            case 't': expect_literal("true"); out.type_ = JsonValue::Type::Bool; out.bool_ = true; return;
            case 'f': expect_literal("false"); out.type_ = JsonValue::Type::Bool; out.bool_ = false; return;
            case 'n': expect_literal("null"); out.type_ = JsonValue::Type::Null; return;
            default:
                if (c == '-' || (c >= '0' && c <= '9')) { parse_number(out); return; }
                fail("unexpected character");
        }
    }

    void parse_object(JsonValue& out, int depth) {
        out.type_ = JsonValue::Type::Object;
        pos_++;  // '{'
        skip_space();
        if (peek() == '}') { pos_++; return; }
        for (;;) {
            skip_space();
            if (peek() != '"') fail("expected a string key");
            out.object_.emplace_back();
            JsonValue::Member& m = out.object_.back();
            parse_string(m.first);
            skip_space();
            if (peek() != ':') fail("expected ':' after the key");
            pos_++;
            skip_space();
            parse_value(m.second, depth + 1);
            skip_space();
            char c = peek();
            if (c == ',') { pos_++; continue; }
            if (c == '}') { pos_++; return; }
            fail(at_end() ? "unexpected end of input in an object" : "expected ',' or '}'");
        }
    }

    void parse_array(JsonValue& out, int depth) {
        out.type_ = JsonValue::Type::Array;
        pos_++;  // '['
        skip_space();
        if (peek() == ']') { pos_++; return; }
        for (;;) {
            skip_space();
            out.array_.emplace_back();
            parse_value(out.array_.back(), depth + 1);
            skip_space();
            char c = peek();
            if (c == ',') { pos_++; continue; }
            if (c == ']') { pos_++; return; }
            fail(at_end() ? "unexpected end of input in an array" : "expected ',' or ']'");
        }
    }

    static bool is_digit(char c) { return c >= '0' && c <= '9'; }

    // -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
    void parse_number(JsonValue& out) {
        size_t start = pos_;
        if (peek() == '-') pos_++;
        if (peek() == '0') {
            pos_++;
            if (is_digit(peek())) fail("leading zero in a number");
        } else if (is_digit(peek())) {
            while (is_digit(peek())) pos_++;
        } else {
            fail("expected a digit");
        }
        if (peek() == '.') {
            pos_++;
            if (!is_digit(peek())) fail("expected a digit after '.'");
            while (is_digit(peek())) pos_++;
        }
        if (peek() == 'e' || peek() == 'E') {
            pos_++;
            if (peek() == '+' || peek() == '-') pos_++;
            if (!is_digit(peek())) fail("expected a digit in the exponent");
            while (is_digit(peek())) pos_++;
        }
        double x = 0;
        auto r = std::from_chars(s_.data() + start, s_.data() + pos_, x);
        if (r.ec == std::errc::result_out_of_range) {
            pos_ = start;
            fail("number out of range");
        }
        out.type_ = JsonValue::Type::Number;
        out.number_ = x;
    }

    int hex4() {
        if (pos_ + 4 > s_.size()) fail("truncated \\u escape");
        int v = 0;
        for (int i = 0; i < 4; i++) {
            char c = s_[pos_ + i];
            int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1;
            if (d < 0) fail("invalid hex digit in a \\u escape");
            v = v * 16 + d;
        }
        pos_ += 4;
        return v;
    }

    static void append_utf8(std::string& out, uint32_t cp) {
        if (cp < 0x80) {
            out += (char)cp;
        } else if (cp < 0x800) {
            out += (char)(0xC0 | (cp >> 6));
            out += (char)(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
            out += (char)(0xE0 | (cp >> 12));
            out += (char)(0x80 | ((cp >> 6) & 0x3F));
            out += (char)(0x80 | (cp & 0x3F));
        } else {
            out += (char)(0xF0 | (cp >> 18));
            out += (char)(0x80 | ((cp >> 12) & 0x3F));
            out += (char)(0x80 | ((cp >> 6) & 0x3F));
            out += (char)(0x80 | (cp & 0x3F));
        }
    }

    // Length of the valid UTF-8 sequence starting at pos_ (lead byte >= 0x80), or 0 when invalid
    // (overlong forms, surrogates and code points past U+10FFFF are invalid).
    size_t utf8_sequence_length() const {
        const unsigned char* p = (const unsigned char*)s_.data() + pos_;
        size_t left = s_.size() - pos_;
        unsigned char b0 = p[0];
        size_t n;
        unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
        if (b0 >= 0xC2 && b0 <= 0xDF) n = 2;
        else if (b0 >= 0xE0 && b0 <= 0xEF) { n = 3; if (b0 == 0xE0) lo = 0xA0; if (b0 == 0xED) hi = 0x9F; }
        else if (b0 >= 0xF0 && b0 <= 0xF4) { n = 4; if (b0 == 0xF0) lo = 0x90; if (b0 == 0xF4) hi = 0x8F; }
        else return 0;
        if (left < n) return 0;
        if (p[1] < lo || p[1] > hi) return 0;
        for (size_t i = 2; i < n; i++)
            if ((p[i] & 0xC0) != 0x80) return 0;
        return n;
    }

    void parse_string(std::string& out) {
        pos_++;  // opening quote
        for (;;) {
            // copy the run of plain ASCII characters in one go
            size_t run = pos_;
            while (run < s_.size()) {
                unsigned char c = (unsigned char)s_[run];
                if (c == '"' || c == '\\' || c < 0x20 || c >= 0x80) break;
                run++;
            }
            out.append(s_.data() + pos_, run - pos_);
            pos_ = run;
            if (at_end()) fail("unterminated string");
            unsigned char c = (unsigned char)s_[pos_];
            if (c == '"') { pos_++; return; }
            if (c < 0x20) fail("control character inside a string");
            if (c >= 0x80) {
                size_t n = utf8_sequence_length();
                if (n == 0) fail("invalid UTF-8 inside a string");
                out.append(s_.data() + pos_, n);
                pos_ += n;
                continue;
            }
            // backslash escape
            pos_++;
            if (at_end()) fail("unterminated string");
            char e = s_[pos_++];
            switch (e) {
                case '"': out += '"'; break;
                case '\\': out += '\\'; break;
                case '/': out += '/'; break;
                case 'b': out += '\b'; break;
                case 'f': out += '\f'; break;
                case 'n': out += '\n'; break;
                case 'r': out += '\r'; break;
                case 't': out += '\t'; break;
                case 'u': {
                    uint32_t cp = (uint32_t)hex4();
                    if (cp >= 0xDC00 && cp <= 0xDFFF) { pos_ -= 6; fail("lone low surrogate in a \\u escape"); }
                    if (cp >= 0xD800 && cp <= 0xDBFF) {
                        if (s_.substr(pos_, 2) != "\\u") { pos_ -= 6; fail("high surrogate not followed by a low one"); }
                        pos_ += 2;
                        uint32_t lo = (uint32_t)hex4();
                        if (lo < 0xDC00 || lo > 0xDFFF) { pos_ -= 6; fail("high surrogate not followed by a low one"); }
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    }
                    append_utf8(out, cp);
                    break;
                }
                default: pos_--; fail("invalid escape");
            }
        }
    }
};

JsonValue parse_json(std::string_view text, const std::string& source) {
    return JsonParser(text, source).parse_document();
}

std::string read_file_bytes(const std::string& path) {
    FILE* f = fopen(path.c_str(), "rb");
    LLMQ_CHECK(f, "%s: cannot open file (%s)", path.c_str(), strerror(errno));
    std::string bytes;
    char buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) bytes.append(buf, n);
    bool failed = ferror(f);
    int err = errno;
    fclose(f);
    LLMQ_CHECK(!failed, "%s: read error (%s)", path.c_str(), strerror(err));
    return bytes;
}

JsonValue parse_json_file(const std::string& path) { return parse_json(read_file_bytes(path), path); }

}  // namespace llmq
