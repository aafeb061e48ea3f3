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
const char* unicode_tables_version() { return LLMQ_UNICODE_VERSION; }

}  // namespace llmq
