// fuzz_safetensors: libFuzzer target for the safetensors reader (tools/safetensors.h).
//
// Every input must either be rejected with llmq::Error or parse into tensors whose byte spans tile the
// data section; an accepted file must survive write -> read unchanged (names, dtypes, shapes, bytes,
// metadata). Anything else (a crash, a sanitizer report, another exception, a failed invariant) is a bug.
//
// Fuzzing build (clang; from the repository root):
//   clang++ -std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -DLLMQ_LIBFUZZER dev/fuzz_safetensors.cpp tools/safetensors.cpp tools/json.cpp -o build/fuzz_safetensors
//   mkdir -p build/fuzz_corpus
//   build/fuzz_safetensors -dict=dev/fuzz_safetensors.dict -max_total_time=60 build/fuzz_corpus
// Without -DLLMQ_LIBFUZZER (the Makefile's g++ build, build/dev/fuzz_safetensors) it is a plain program that
// runs the same check over the files named on its command line (e.g. a crash input libFuzzer saved):
//   build/dev/fuzz_safetensors crash-<sha1> model.safetensors ...
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "../kernels/common.h"
#include "../tools/json.h"
#include "../tools/safetensors.h"

using namespace llmq;

static void require(bool ok, const char* what) {
    if (!ok) {
        std::fprintf(stderr, "invariant failed: %s\n", what);
        std::abort();
    }
}

// Returns the number of tensors, or -1 when the reader rejected the input.
static int check_input(const uint8_t* data, size_t size, std::string* why) {
    try {
        SafeTensorsFile f = SafeTensorsFile::from_bytes(data, size, "fuzz");
        std::vector<SafeTensorToWrite> again;
        uint64_t covered = 0;
        for (const SafeTensorInfo& t : f.tensors()) {
            require(t.begin == covered && t.end >= t.begin, "spans tile the data section");
            covered = t.end;
            require((uint64_t)t.numel() * dtype_size(t.dtype) == t.end - t.begin, "span = numel * dtype size");
            require(f.find(t.name) == &t, "find() returns the tensor");
            if (t.dtype == Dtype::F32 || t.dtype == Dtype::F16 || t.dtype == Dtype::BF16)
                require(f.to_float(t.name).size() == (size_t)t.numel(), "to_float size");
            again.push_back({t.name, t.dtype, t.shape, f.bytes(t)});
        }
        std::vector<uint8_t> bytes = serialize_safetensors(again, f.metadata());
        SafeTensorsFile g = SafeTensorsFile::from_bytes(bytes.data(), bytes.size(), "fuzz rewritten");
        require(g.tensors().size() == f.tensors().size() && g.metadata() == f.metadata(), "round trip: counts");
        for (const SafeTensorInfo& t : f.tensors()) {
            const SafeTensorInfo* u = g.find(t.name);
            require(u && u->dtype == t.dtype && u->shape == t.shape, "round trip: dtype and shape");
            require(std::memcmp(g.bytes(*u), f.bytes(t), t.end - t.begin) == 0, "round trip: bytes");
        }
        return (int)f.tensors().size();
    } catch (const Error& e) {
        if (why) *why = e.what();
        return -1;
    }
}

#ifdef LLMQ_LIBFUZZER
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    check_input(data, size, nullptr);
    return 0;
}
#else
int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s FILE...   (runs the safetensors fuzz check over each file)\n", argv[0]);
        return 1;
    }
    for (int i = 1; i < argc; i++) {
        std::string bytes, why;
        try {
            bytes = read_file_bytes(argv[i]);
        } catch (const Error& e) {
            std::fprintf(stderr, "error: %s\n", e.what());
            return 1;
        }
        int n = check_input((const uint8_t*)bytes.data(), bytes.size(), &why);
        if (n >= 0) std::printf("%s: ok, %d tensors\n", argv[i], n);
        else std::printf("%s: rejected: %s\n", argv[i], why.c_str());
    }
    return 0;
}
#endif
