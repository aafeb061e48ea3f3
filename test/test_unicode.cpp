// Tests of tools/unicode.h: class flags of known code points and the UTF-8 character splitter.
#include <gtest/gtest.h>

#include <string>

#include "../tools/unicode.h"

using namespace llmq;

TEST(Unicode, FlagsOfKnownCodePoints) {
    EXPECT_EQ(unicode_flags('a'), kUnicodeLl);
    EXPECT_EQ(unicode_flags('Z'), kUnicodeLu);
    EXPECT_EQ(unicode_flags('7'), kUnicodeN);
    EXPECT_EQ(unicode_flags(' '), kUnicodeWhiteSpace);
    EXPECT_EQ(unicode_flags('\n'), kUnicodeWhiteSpace);
    EXPECT_EQ(unicode_flags('!'), 0);
    EXPECT_EQ(unicode_flags(0x00E9), kUnicodeLl);          // e acute
    EXPECT_EQ(unicode_flags(0x01C5), kUnicodeLt);          // Dz titlecase
    EXPECT_EQ(unicode_flags(0x02B0), kUnicodeLm);          // modifier letter small h
    EXPECT_EQ(unicode_flags(0x4E2D), kUnicodeLo);          // CJK, inside a First/Last range
    EXPECT_EQ(unicode_flags(0x0301), kUnicodeM);           // combining acute accent
    EXPECT_EQ(unicode_flags(0x0663), kUnicodeN);           // Arabic-Indic three
    EXPECT_EQ(unicode_flags(0x00BD), kUnicodeN);           // vulgar fraction one half (No)
    EXPECT_EQ(unicode_flags(0x2167), kUnicodeN);           // Roman numeral eight (Nl)
    EXPECT_EQ(unicode_flags(0x00A0), kUnicodeWhiteSpace);  // no-break space
    EXPECT_EQ(unicode_flags(0x3000), kUnicodeWhiteSpace);  // ideographic space
    EXPECT_EQ(unicode_flags(0x200B), 0);                   // zero width space is not White_Space
    EXPECT_EQ(unicode_flags(0x1F600), 0);                  // emoji: So
    EXPECT_EQ(unicode_flags(0x0378), 0);                   // unassigned
    EXPECT_EQ(unicode_flags(0x20000), kUnicodeLo);         // CJK extension B
    EXPECT_EQ(unicode_flags(0x10FFFF), 0);
    EXPECT_EQ(unicode_flags(0x110000), 0);
    EXPECT_EQ(unicode_flags(0x13460), kUnicodeLo);         // Egyptian hieroglyph, new in Unicode 16.0
    EXPECT_EQ(unicode_flags(0x10D50), kUnicodeLu);         // Garay capital letter, new in 16.0
    EXPECT_STREQ(unicode_tables_version(), "16.0.0");      // the version tiktoken's regex crate uses
}

TEST(Unicode, Utf8CharSplitsEveryByteString) {
    auto chars = [](const std::string& s) {
        std::string lens;
        const unsigned char* p = (const unsigned char*)s.data();
        for (size_t i = 0; i < s.size();) {
            Utf8Char c = utf8_char_at(p, s.size(), i);
            lens += (char)('0' + c.len);
            i += c.len;
        }
        return lens;
    };
    EXPECT_EQ(chars("a\xC3\xA9\xE4\xB8\xAD\xF0\x9F\x98\x80"), "1234");
    EXPECT_EQ(chars("\xC0\xAF"), "11");          // overlong
    EXPECT_EQ(chars("\xED\xA0\x80"), "111");     // surrogate
    EXPECT_EQ(chars("\xF4\x90\x80\x80"), "1111"); // past U+10FFFF
    EXPECT_EQ(chars("\xE4\xB8"), "11");          // truncated at the end
    EXPECT_EQ(chars("\x80\xFF"), "11");
    EXPECT_EQ(utf8_char_at((const unsigned char*)"\xFF", 1, 0).flags, 0);
    EXPECT_EQ(utf8_char_at((const unsigned char*)"\xCC\x81", 2, 0).flags, kUnicodeM);
}
