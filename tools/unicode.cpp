// unicode.cpp: lookups into the generated Unicode tables (see unicode.h and gen_unicode_tables.py).
#include "unicode.h"

#include <algorithm>

namespace llmq {

#include "unicode_tables.inc"

uint8_t unicode_flags_slow(uint32_t cp) {
    if (cp > 0x10FFFF) return 0;
    const uint32_t* end = kUnicodeRuns + sizeof kUnicodeRuns / sizeof kUnicodeRuns[0];
    const uint32_t* it = std::upper_bound(kUnicodeRuns, end, (cp << 8) | 0xFFu);  // first run starting after cp
    return (uint8_t)(it[-1] & 0xFFu);
}
Utf8Char utf8_char_at_multibyte(const unsigned char* s, size_t n, size_t i) {
    unsigned char b0 = s[i];
    size_t left = n - i;
    uint32_t cp;
    if (b0 >= 0xC2 && b0 <= 0xDF) {
        if (left < 2 || (s[i + 1] & 0xC0) != 0x80) return {0, 1};
        cp = ((b0 & 0x1Fu) << 6) | (s[i + 1] & 0x3Fu);
        return {unicode_flags_slow(cp), 2};
    }
    if (b0 >= 0xE0 && b0 <= 0xEF) {
        if (left < 3) return {0, 1};
        unsigned char b1 = s[i + 1], b2 = s[i + 2];
        unsigned char lo = b0 == 0xE0 ? 0xA0 : 0x80, hi = b0 == 0xED ? 0x9F : 0xBF;
        if (b1 < lo || b1 > hi || (b2 & 0xC0) != 0x80) return {0, 1};
        cp = ((b0 & 0x0Fu) << 12) | ((b1 & 0x3Fu) << 6) | (b2 & 0x3Fu);
        return {unicode_flags_slow(cp), 3};
    }
    if (b0 >= 0xF0 && b0 <= 0xF4) {
        if (left < 4) return {0, 1};
        unsigned char b1 = s[i + 1], b2 = s[i + 2], b3 = s[i + 3];
        unsigned char lo = b0 == 0xF0 ? 0x90 : 0x80, hi = b0 == 0xF4 ? 0x8F : 0xBF;
        if (b1 < lo || b1 > hi || (b2 & 0xC0) != 0x80 || (b3 & 0xC0) != 0x80) return {0, 1};
        cp = ((b0 & 0x07u) << 18) | ((b1 & 0x3Fu) << 12) | ((b2 & 0x3Fu) << 6) | (b3 & 0x3Fu);
        return {unicode_flags_slow(cp), 4};
    }
    return {0, 1};
}

const char* unicode_tables_version() { return LLMQ_UNICODE_VERSION; }

}  // namespace llmq
