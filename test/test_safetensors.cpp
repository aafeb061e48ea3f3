// Tests of tools/safetensors.h and tools/float16.h: round trips of every dtype through a file, byte-exact
// files as the Python/Rust library writes them (headers written out by hand), every rejection of the
// strict reader, writer errors, and the fp16/bf16 conversions (exhaustively against a double reference).
#include <gtest/gtest.h>

#include <stdlib.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <fstream>

#include "../kernels/common.h"
#include "../tools/float16.h"
#include "../tools/safetensors.h"

using namespace llmq;

namespace {

// A fresh empty directory for one test's files.
std::string temp_dir() {
    char tmpl[] = "/tmp/llmq_safetensors_XXXXXX";
    const char* dir = mkdtemp(tmpl);
    EXPECT_NE(dir, nullptr);
    return dir ? dir : "/tmp";
}

// u64 little-endian length, the header text as given (no padding added), then data_size bytes 0, 1, 2, ...
std::vector<uint8_t> raw_file(const std::string& header, size_t data_size) {
    std::vector<uint8_t> f;
    for (int k = 0; k < 8; k++) f.push_back((uint8_t)((uint64_t)header.size() >> (8 * k)));
    for (char c : header) f.push_back((uint8_t)c);
    for (size_t i = 0; i < data_size; i++) f.push_back((uint8_t)i);
    return f;
}

void expect_rejected(const std::vector<uint8_t>& bytes, std::initializer_list<const char*> parts) {
    try {
        SafeTensorsFile::from_bytes(bytes.data(), bytes.size(), "bad.safetensors");
        ADD_FAILURE() << "accepted; expected an error with '" << *parts.begin() << "'";
    } catch (const Error& e) {
        std::string msg = e.what();
        EXPECT_NE(msg.find("bad.safetensors"), std::string::npos) << msg;
        for (const char* p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << msg << "' lacks '" << p << "'";
    }
}

std::string entry(const char* name, const char* dtype, const char* shape, uint64_t begin, uint64_t end) {
    return format("\"%s\":{\"dtype\":\"%s\",\"shape\":%s,\"data_offsets\":[%llu,%llu]}", name, dtype, shape,
                  (unsigned long long)begin, (unsigned long long)end);
}

}  // namespace

TEST(SafeTensors, RoundTripEveryDtype) {
    Rng rng(1);
    struct Case {
        const char* name;
        Dtype dtype;
        std::vector<int64_t> shape;
    };
    const std::vector<Case> cases = {
        {"w.f32", Dtype::F32, {3, 5}}, {"w.f16", Dtype::F16, {7}},      {"w.bf16", Dtype::BF16, {2, 2, 3}},
        {"i64", Dtype::I64, {4}},      {"i32", Dtype::I32, {1, 3}},     {"i16", Dtype::I16, {5}},
        {"i8", Dtype::I8, {9}},        {"u8", Dtype::U8, {3, 3}},       {"mask", Dtype::BOOL, {6}},
        {"f64", Dtype::F64, {2}},      {"scalar", Dtype::F32, {}},      {"empty", Dtype::F32, {0, 4}},
        {"u16", Dtype::U16, {3}},      {"u32", Dtype::U32, {2}},        {"u64", Dtype::U64, {1}},
        {"f8", Dtype::F8_E4M3, {5}},
    };
    std::vector<std::vector<uint8_t>> payloads;
    std::vector<SafeTensorToWrite> tensors;
    for (const Case& c : cases) {
        int64_t n = 1;
        for (int64_t d : c.shape) n *= d;
        std::vector<uint8_t> bytes(n * dtype_size(c.dtype));
        for (uint8_t& b : bytes) b = (uint8_t)rng.next_u32();
        payloads.push_back(bytes);
    }
    for (size_t i = 0; i < cases.size(); i++)
        tensors.push_back({cases[i].name, cases[i].dtype, cases[i].shape, payloads[i].data()});
    const std::map<std::string, std::string> metadata = {{"format", "pt"}, {"note", "quote \" slash \\ tab \t é"}};
    const std::string path = temp_dir() + "/model.safetensors";
    write_safetensors(path, tensors, metadata);
    EXPECT_NE(access(path.c_str(), F_OK), -1);
    EXPECT_EQ(access((path + ".tmp").c_str(), F_OK), -1) << "temporary file left behind";

    SafeTensorsFile f = SafeTensorsFile::open(path);
    EXPECT_EQ(f.metadata(), metadata);
    ASSERT_EQ(f.tensors().size(), cases.size());
    for (size_t i = 0; i < cases.size(); i++) {
        const SafeTensorInfo& t = f.at(cases[i].name);
        EXPECT_EQ(t.dtype, cases[i].dtype) << cases[i].name;
        EXPECT_EQ(t.shape, cases[i].shape) << cases[i].name;
        ASSERT_EQ(t.end - t.begin, payloads[i].size()) << cases[i].name;
        if (!payloads[i].empty()) {  // memcmp with a null pointer is UB even for 0 bytes
            EXPECT_EQ(std::memcmp(f.bytes(t), payloads[i].data(), payloads[i].size()), 0) << cases[i].name;
        }
        EXPECT_EQ((uintptr_t)f.bytes(t) % dtype_size(t.dtype), 0u) << cases[i].name << " misaligned";
    }
    // the library's data order: dtype descending (its enum order), then name
    for (size_t i = 1; i < f.tensors().size(); i++) {
        const SafeTensorInfo &a = f.tensors()[i - 1], &b = f.tensors()[i];
        EXPECT_TRUE(a.dtype > b.dtype || (a.dtype == b.dtype && a.name < b.name)) << a.name << " before " << b.name;
    }
    EXPECT_EQ(f.tensors().front().name, "u64");
    EXPECT_EQ(f.find("missing"), nullptr);
    EXPECT_THROW(f.at("missing"), Error);
    EXPECT_THROW(f.to_float("i32"), Error);
    EXPECT_TRUE(f.to_float("empty").empty());  // found by the fuzzer (UBSan: memcpy to null)
    std::vector<float> w = f.to_float("w.f32");
    EXPECT_EQ(std::memcmp(w.data(), payloads[0].data(), payloads[0].size()), 0);
}

TEST(SafeTensors, ByteExactLikeThePythonLibrary) {
    // save_file({"a": torch.tensor([1.0, -2.5])}): 54 bytes of compact JSON + 2 spaces = 56
    const std::string header = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}  ";
    ASSERT_EQ(header.size(), 56u);
    std::vector<uint8_t> file = {56, 0, 0, 0, 0, 0, 0, 0};
    file.insert(file.end(), header.begin(), header.end());
    const uint8_t data[8] = {0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x20, 0xc0};  // 1.0f, -2.5f little-endian
    file.insert(file.end(), data, data + 8);
    SafeTensorsFile f = SafeTensorsFile::from_bytes(file.data(), file.size(), "a.safetensors");
    ASSERT_EQ(f.tensors().size(), 1u);
    EXPECT_EQ(f.tensors()[0].shape, std::vector<int64_t>{2});
    EXPECT_EQ(f.to_float("a"), (std::vector<float>{1.0f, -2.5f}));
    const float values[2] = {1.0f, -2.5f};
    EXPECT_EQ(serialize_safetensors({{"a", Dtype::F32, {2}, values}}), file);

    // the library's own vectors: no padding needed (64), 7 spaces (72), empty file, metadata only
    const float six[6] = {0, 1, 2, 3, 4, 5};
    std::vector<uint8_t> out = serialize_safetensors({{"attn.0", Dtype::F32, {1, 2, 3}, six}});
    std::string h64 = "{\"attn.0\":{\"dtype\":\"F32\",\"shape\":[1,2,3],\"data_offsets\":[0,24]}}";
    EXPECT_EQ(out[0], 64);
    EXPECT_EQ(std::string(out.begin() + 8, out.begin() + 72), h64);
    EXPECT_EQ(out.size(), 8u + 64 + 24);
    out = serialize_safetensors({{"attn0", Dtype::F32, {1, 1, 2, 3}, six}});
    EXPECT_EQ(out[0], 72);
    EXPECT_EQ(std::string(out.begin() + 8, out.begin() + 80),
              "{\"attn0\":{\"dtype\":\"F32\",\"shape\":[1,1,2,3],\"data_offsets\":[0,24]}}       ");
    EXPECT_EQ(serialize_safetensors({}), (std::vector<uint8_t>{8, 0, 0, 0, 0, 0, 0, 0, '{', '}', ' ', ' ', ' ', ' ', ' ', ' '}));
    out = serialize_safetensors({}, {{"framework", "pt"}});
    EXPECT_EQ(std::string(out.begin(), out.end()),
              std::string("\x28\0\0\0\0\0\0\0", 8) + "{\"__metadata__\":{\"framework\":\"pt\"}}     ");
    SafeTensorsFile g = SafeTensorsFile::from_bytes(out.data(), out.size(), "meta");
    EXPECT_EQ(g.metadata().at("framework"), "pt");
    EXPECT_TRUE(g.tensors().empty());
}

TEST(SafeTensors, RejectsMalformedFiles) {
    const std::string a8 = entry("a", "F32", "[2]", 0, 8);
    expect_rejected({1, 2, 3}, {"truncated", "3 bytes"});
    std::vector<uint8_t> big = raw_file("{}", 0);
    uint64_t n = 100000001;
    std::memcpy(big.data(), &n, 8);
    expect_rejected(big, {"100000001", "100 MB"});
    std::vector<uint8_t> past = raw_file("{" + a8 + "}", 8);
    n = past.size();
    std::memcpy(past.data(), &n, 8);
    expect_rejected(past, {"runs past the end of the file"});
    expect_rejected(raw_file("{\"a\":", 0), {"invalid JSON"});
    expect_rejected(raw_file("{" + a8 + ",}", 8), {"invalid JSON"});
    expect_rejected(raw_file("[1, 2]", 0), {"not an object"});
    expect_rejected(raw_file("{\"a\": 5}", 0), {"entry 'a'", "not an object"});
    expect_rejected(raw_file("{" + entry("a", "F17", "[2]", 0, 8) + "}", 8), {"unknown dtype 'F17'"});
    expect_rejected(raw_file("{" + entry("a", "F32", "[3]", 0, 8) + "}", 8), {"'a'", "need 12 bytes", "hold 8"});
    expect_rejected(raw_file("{" + entry("a", "F32", "[1099511627776,1099511627776]", 0, 8) + "}", 8),
                    {"more than 2^64"});
    expect_rejected(raw_file("{" + entry("a", "F32", "[-2]", 0, 8) + "}", 8), {"shape", "whole number"});
    expect_rejected(raw_file("{" + entry("a", "F32", "[2.5]", 0, 8) + "}", 8), {"shape", "whole number"});
    expect_rejected(raw_file("{" + entry("a", "U8", "[0]", 8, 0) + "}", 8), {"begin after end"});
    // offsets: overlap, out of range / truncated, holes between, before and after
    expect_rejected(raw_file("{" + a8 + "," + entry("b", "F32", "[2]", 4, 12) + "}", 12), {"'b'", "overlap", "'a'"});
    expect_rejected(raw_file("{" + entry("a", "F32", "[4]", 0, 16) + "}", 8), {"past the end", "8-byte data section"});
    expect_rejected(raw_file("{" + entry("a", "F32", "[1]", 0, 4) + "," + entry("b", "F32", "[1]", 8, 12) + "}", 12),
                    {"hole", "[4, 8)"});
    expect_rejected(raw_file("{" + entry("a", "F32", "[1]", 4, 8) + "}", 8), {"hole", "[0, 4)"});
    expect_rejected(raw_file("{" + entry("a", "F32", "[1]", 0, 4) + "}", 8), {"hole", "last 4 bytes"});
    expect_rejected(raw_file("{" + a8 + "," + a8 + "}", 8), {"duplicate tensor name 'a'"});
    std::vector<uint8_t> cut = raw_file("{" + a8 + "}", 8);
    cut.resize(cut.size() - 3);
    expect_rejected(cut, {"past the end", "truncated"});
    // entry structure and metadata
    expect_rejected(raw_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"x\":1}}", 8),
                    {"unknown key 'x'"});
    expect_rejected(raw_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8), {"lacks"});
    expect_rejected(raw_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 8), {"data_offsets"});
    expect_rejected(raw_file("{\"__metadata__\":{\"k\":1}," + a8 + "}", 8), {"__metadata__", "not a string"});
    expect_rejected(raw_file("{\"__metadata__\":[]," + a8 + "}", 8), {"__metadata__", "not an object"});
    // a file that does not exist, or is a directory
    EXPECT_THROW(SafeTensorsFile::open("/nonexistent/x.safetensors"), Error);
    EXPECT_THROW(SafeTensorsFile::open("/tmp"), Error);
}

TEST(SafeTensors, WriterRejectsBadTensors) {
    const float x[2] = {1, 2};
    EXPECT_THROW(serialize_safetensors({{"a", Dtype::F32, {2}, x}, {"a", Dtype::F32, {2}, x}}), Error);
    EXPECT_THROW(serialize_safetensors({{"__metadata__", Dtype::F32, {2}, x}}), Error);
    EXPECT_THROW(serialize_safetensors({{"a", Dtype::F32, {-2}, x}}), Error);
    EXPECT_THROW(serialize_safetensors({{"a", Dtype::F32, {2}, nullptr}}), Error);
    // names and metadata must be UTF-8 (the header is JSON): bad bytes, overlong, surrogate, truncated
    for (const char* bad : {"\xff", "\xc0\x80", "\xed\xa0\x80", "w\xe2\x82"}) {
        EXPECT_THROW(serialize_safetensors({{bad, Dtype::F32, {2}, x}}), Error) << bad;
        EXPECT_THROW(serialize_safetensors({}, {{"k", bad}}), Error) << bad;
    }
    std::vector<uint8_t> ok = serialize_safetensors({{"w\xe2\x82\xac\xf0\x9f\x98\x80", Dtype::F32, {2}, x}});
    EXPECT_EQ(SafeTensorsFile::from_bytes(ok.data(), ok.size(), "utf8").tensors()[0].name, "w\u20ac\U0001F600");
    EXPECT_THROW(write_safetensors("/nonexistent/dir/x.safetensors", {{"a", Dtype::F32, {2}, x}}), Error);
}

TEST(Float16, ExhaustiveAgainstDoubleReference) {
    for (uint32_t h = 0; h < 65536; h++) {
        const int sign = h >> 15, exp = (h >> 10) & 31, mant = h & 1023;
        const float f = f16_to_float((uint16_t)h);
        if (exp == 31) {
            EXPECT_TRUE(mant ? std::isnan(f) : std::isinf(f)) << h;
            if (mant) {
                EXPECT_EQ(float_bits(f) >> 31, (uint32_t)sign) << h;
                EXPECT_EQ(float_to_f16(f) & 0x7e00, 0x7e00) << h;  // NaN stays NaN
                continue;
            }
        } else {
            double ref = exp == 0 ? std::ldexp((double)mant, -24) : std::ldexp(1.0 + mant / 1024.0, exp - 15);
            if (sign) ref = -ref;
            ASSERT_EQ((double)f, ref) << h;
            ASSERT_EQ(std::signbit(f), (bool)sign) << h;
        }
        ASSERT_EQ(float_to_f16(f), h) << h;  // exact values round-trip to themselves
        // bf16: the same 65536 patterns
        const float b = bf16_to_float((uint16_t)h);
        if (!std::isnan(b)) {
            ASSERT_EQ(float_to_bf16(b), h) << h;
        }
        if (((h >> 7) & 255) != 255 && ((h >> 7) & 255) != 0) {
            double ref = std::ldexp(1.0 + (h & 127) / 128.0, (int)((h >> 7) & 255) - 127);
            ASSERT_EQ((double)b, (h >> 15) ? -ref : ref) << h;
        }
    }
}

TEST(Float16, RepresentativeValuesAndRounding) {
    EXPECT_EQ(f16_to_float(0x3c00), 1.0f);
    EXPECT_EQ(f16_to_float(0x7bff), 65504.0f);
    EXPECT_EQ(f16_to_float(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
    EXPECT_EQ(f16_to_float(0x03ff), std::ldexp(1023.0f, -24));
    EXPECT_EQ(f16_to_float(0x0400), std::ldexp(1.0f, -14));
    EXPECT_EQ(f16_to_float(0x3555), 0.333251953125f);
    EXPECT_EQ(f16_to_float(0xfc00), -INFINITY);
    EXPECT_TRUE(std::isnan(f16_to_float(0x7e00)));
    EXPECT_EQ(float_to_f16(65519.0f), 0x7bff);
    EXPECT_EQ(float_to_f16(65520.0f), 0x7c00);  // the tie above 65504 goes to the even "next" = infinity
    EXPECT_EQ(float_to_f16(-1e30f), 0xfc00);
    EXPECT_EQ(float_to_f16(std::ldexp(1.0f, -25)), 0x0000);        // tie between 0 and 2^-24: even (0)
    EXPECT_EQ(float_to_f16(std::ldexp(3.0f, -25)), 0x0002);        // tie between 1 and 2 ulps: even (2)
    EXPECT_EQ(float_to_f16(std::ldexp(2047.0f, -25)), 0x0400);     // largest subnormal + half: up to 2^-14
    EXPECT_EQ(float_to_f16(1.0f + std::ldexp(1.0f, -11)), 0x3c00); // tie: even
    EXPECT_EQ(float_to_f16(1.0f + std::ldexp(3.0f, -11)), 0x3c02);
    EXPECT_EQ(float_to_f16(std::ldexp(1.0f, -30)), 0x0000);
    EXPECT_EQ(float_to_f16(-0.0f), 0x8000);
    EXPECT_EQ(bf16_to_float(0x3f80), 1.0f);
    EXPECT_EQ(bf16_to_float(0x0001), std::ldexp(1.0f, -133));  // bf16 subnormal
    EXPECT_EQ(bf16_to_float(0xff80), -INFINITY);
    EXPECT_TRUE(std::isnan(bf16_to_float(0x7fc1)));
    EXPECT_EQ(float_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);  // tie: even
    EXPECT_EQ(float_to_bf16(1.0f + std::ldexp(3.0f, -8)), 0x3f82);
    EXPECT_EQ(float_to_bf16(3.4e38f), 0x7f80);                       // rounds past the largest bf16: inf
    EXPECT_EQ(float_to_bf16(bits_float(0x7f800001u)) & 0x7fc0, 0x7fc0); // signalling NaN payload in the
                                                                      // low bits: still NaN, quiet
    // through a file: F16 and BF16 tensors widen exactly
    const uint16_t halfs[6] = {0x3c00, 0x0001, 0x03ff, 0x7c00, 0xfc00, 0x7e00};
    const uint16_t bfs[5] = {0x3f80, 0x0001, 0x8000, 0x7f80, 0x7fc0};
    std::vector<uint8_t> file = serialize_safetensors({{"h", Dtype::F16, {6}, halfs}, {"b", Dtype::BF16, {5}, bfs}});
    SafeTensorsFile f = SafeTensorsFile::from_bytes(file.data(), file.size(), "halfs");
    std::vector<float> h = f.to_float("h"), b = f.to_float("b");
    for (int i = 0; i < 5; i++) EXPECT_EQ(float_bits(h[i]), float_bits(f16_to_float(halfs[i]))) << i;
    EXPECT_TRUE(std::isnan(h[5]));
    EXPECT_EQ(h[1], std::ldexp(1.0f, -24));
    for (int i = 0; i < 5; i++) EXPECT_EQ(float_bits(b[i]), (uint32_t)bfs[i] << 16) << i;
}
