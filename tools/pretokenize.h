// pretokenize: splits text into the pieces tiktoken's regex would produce, with a hand-written scanner
// (no regex engine) over the Unicode class tables of tools/unicode.h.
//
// Patterns (tiktoken pat_str, matched leftmost-alternative-first as a backtracking regex does):
//   gpt2:        's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//   cl100k_base: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*
//                |\s*[\r\n]+|\s+(?!\S)|\s+
//   o200k_base:  [^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?
//                |[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?
//                |\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+
// \s is Unicode White_Space; (?i:) follows Rust's simple case folding, so 's also matches 'S and 'ſ (U+017F).
// Invalid UTF-8 bytes are each one character of no class (so they group like punctuation); every byte
// of the text lands in exactly one piece.
//
// Each scanner below returns the end of the piece that starts at p (always > p). Names: U = the
// "upper" class [Lu Lt Lm Lo M] and W = the "lower" class [Ll Lm Lo M] of o200k; "other" = not
// White_Space, not L, not N.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "unicode.h"

namespace llmq {

enum class PretokenPattern { GPT2, CL100K, O200K };

// The pattern whose tiktoken pat_str is exactly `pat_str`; throws Error (naming `source`) for any other.
PretokenPattern pretoken_pattern_from_regex(const std::string& pat_str, const std::string& source);
// The pat_str of a pattern (the regex text above).
const char* pretoken_pattern_regex(PretokenPattern pattern);

// Calls emit(std::string_view piece) for each piece of text, in order, covering text exactly.
template <typename F>
void pretokenize(PretokenPattern pattern, std::string_view text, F&& emit);

// Convenience: the pieces as a vector (views into text).
std::vector<std::string_view> pretokenize_pieces(PretokenPattern pattern, std::string_view text);

// ---- implementation ---------------------------------------------------------------------------------

namespace pretok_detail {

constexpr uint8_t kU = kUnicodeLu | kUnicodeLt | kUnicodeLm | kUnicodeLo | kUnicodeM;
constexpr uint8_t kW = kUnicodeLl | kUnicodeLm | kUnicodeLo | kUnicodeM;
constexpr uint8_t kLNS = kUnicodeL | kUnicodeN | kUnicodeWhiteSpace;

struct Scanner {
    const unsigned char* s;
    size_t n;

    Utf8Char at(size_t i) const { return utf8_char_at(s, n, i); }
    bool is_newline(size_t i) const { return i < n && (s[i] == '\r' || s[i] == '\n'); }

    // End of the run of characters, from i, whose flags intersect `any`.
    size_t run_any(size_t i, uint8_t any) const {
        while (i < n) {
            Utf8Char c = at(i);
            if (!(c.flags & any)) break;
            i += c.len;
        }
        return i;
    }
    // End of the run of "other" characters (no L, N or White_Space flag), from i.
    size_t run_other(size_t i) const {
        while (i < n) {
            Utf8Char c = at(i);
            if (c.flags & kLNS) break;
            i += c.len;
        }
        return i;
    }

    // 's|'t|'re|'ve|'m|'ll|'d at p (s[p] == '\''): the match's length, or 0.
    size_t contraction(size_t p, bool ignore_case) const {
        if (p + 1 >= n || s[p] != '\'') return 0;
        unsigned char a = s[p + 1];
        if (ignore_case) {
            if (a == 0xC5 && p + 2 < n && s[p + 2] == 0xBF) return 3;  // 'ſ folds to 's
            if (a >= 'A' && a <= 'Z') a = (unsigned char)(a + 32);
        }
        if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
        if (p + 2 >= n) return 0;
        unsigned char b = s[p + 2];
        if (ignore_case && b >= 'A' && b <= 'Z') b = (unsigned char)(b + 32);
        if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
        return 0;
    }

    // The White_Space alternatives starting at p (s[p] is White_Space):
    //   [cl100k, o200k] \s*[\r\n]+  : the run up to and including its last \r or \n, if it has one;
    //   \s+(?!\S)                   : the whole run at the end of the text, else the run less its
    //                                 last character, if that leaves at least one;
    //   \s+                         : the whole run.
    size_t whitespace(size_t p, bool newline_alternative) const {
        size_t i = p, last_start = p, after_newline = 0;
        while (i < n) {
            Utf8Char c = at(i);
            if (!(c.flags & kUnicodeWhiteSpace)) break;
            if (s[i] == '\r' || s[i] == '\n') after_newline = i + 1;
            last_start = i;
            i += c.len;
        }
        if (newline_alternative && after_newline) return after_newline;
        if (i == n || last_start == p) return i;
        return last_start;
    }

    size_t numbers_up_to_3(size_t p) const {
        size_t i = p;
        for (int k = 0; k < 3 && i < n; k++) {
            Utf8Char c = at(i);
            if (!(c.flags & kUnicodeN)) break;
            i += c.len;
        }
        return i;
    }

    size_t next_gpt2(size_t p) const {
        size_t k = contraction(p, false);
        if (k) return p + k;
        size_t q = (s[p] == ' ' && p + 1 < n) ? p + 1 : p;  // " ?" before the letter/number/other runs
        Utf8Char c = at(q);
        if (c.flags & kUnicodeL) return run_any(q, kUnicodeL);
        if (c.flags & kUnicodeN) return run_any(q, kUnicodeN);
        if (!(c.flags & kLNS)) return run_other(q);
        return whitespace(p, false);
    }

    // [^\r\n\p{L}\p{N}]? : the optional leading character of the letter alternatives.
    bool is_letter_prefix(size_t p, Utf8Char c) const { return !(c.flags & (kUnicodeL | kUnicodeN)) && !is_newline(p); }

    // " ?[^\s\p{L}\p{N}]+" then a run of the given trailing bytes; 0 when it does not match at p.
    size_t punctuation(size_t p, bool slash_too) const {
        size_t q = (s[p] == ' ' && p + 1 < n) ? p + 1 : p;
        if (at(q).flags & kLNS) return 0;
        size_t i = run_other(q);
        while (i < n && (s[i] == '\r' || s[i] == '\n' || (slash_too && s[i] == '/'))) i++;
        return i;
    }

    size_t next_cl100k(size_t p) const {
        size_t k = contraction(p, true);
        if (k) return p + k;
        Utf8Char c = at(p);
        if (c.flags & kUnicodeL) return run_any(p, kUnicodeL);
        if (is_letter_prefix(p, c) && p + c.len < n && (at(p + c.len).flags & kUnicodeL)) return run_any(p + c.len, kUnicodeL);
        if (c.flags & kUnicodeN) return numbers_up_to_3(p);
        if (size_t e = punctuation(p, false)) return e;
        return whitespace(p, true);
    }

    // U*W+ from q with backtracking: if the maximal U run is followed by a W character, the W run
    // after it; else the run up to the end of its last W character (U* gives characters back). 0: none.
    size_t upper_star_lower_plus(size_t q) const {
        size_t i = q, last_w_end = 0;
        while (i < n) {
            Utf8Char c = at(i);
            if (!(c.flags & kU)) break;
            i += c.len;
            if (c.flags & kW) last_w_end = i;
        }
        if (i < n && (at(i).flags & kW)) return run_any(i, kW);
        return last_w_end;
    }
    // U+W* from q; 0 when q does not start a U character.
    size_t upper_plus_lower_star(size_t q) const {
        size_t i = run_any(q, kU);
        return i == q ? 0 : run_any(i, kW);
    }
    // The o200k letter alternatives: each tried with its optional leading character first, then without.
    template <size_t (Scanner::*Core)(size_t) const>
    size_t o200k_letters(size_t p, Utf8Char c) const {
        size_t e = 0;
        if (is_letter_prefix(p, c) && p + c.len < n) e = (this->*Core)(p + c.len);
        if (!e) e = (this->*Core)(p);
        if (!e) return 0;
        return e + contraction(e, true);  // (?i:'s|'t|'re|'ve|'m|'ll|'d)?
    }

    size_t next_o200k(size_t p) const {
        Utf8Char c = at(p);
        if (size_t e = o200k_letters<&Scanner::upper_star_lower_plus>(p, c)) return e;
        if (size_t e = o200k_letters<&Scanner::upper_plus_lower_star>(p, c)) return e;
        if (c.flags & kUnicodeN) return numbers_up_to_3(p);
        if (size_t e = punctuation(p, true)) return e;
        return whitespace(p, true);
    }
};

}  // namespace pretok_detail

template <typename F>
void pretokenize(PretokenPattern pattern, std::string_view text, F&& emit) {
    pretok_detail::Scanner sc{(const unsigned char*)text.data(), text.size()};
    size_t p = 0, n = text.size();
    switch (pattern) {
        case PretokenPattern::GPT2:
            while (p < n) { size_t e = sc.next_gpt2(p); emit(text.substr(p, e - p)); p = e; }
            break;
        case PretokenPattern::CL100K:
            while (p < n) { size_t e = sc.next_cl100k(p); emit(text.substr(p, e - p)); p = e; }
            break;
        case PretokenPattern::O200K:
            while (p < n) { size_t e = sc.next_o200k(p); emit(text.substr(p, e - p)); p = e; }
            break;
    }
}

}  // namespace llmq
