// safetensors: a strict reader and a writer for Hugging Face's .safetensors checkpoint format, so llmq
// can load LLaMA-family weights and write checkpoints any HF tool opens.
//
// Format: a little-endian u64 N, then N bytes of UTF-8 JSON, then the data section:
//   {"__metadata__": {"key": "value", ...},                         (optional, string -> string)
//    "<tensor name>": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...}
// Offsets are relative to the data section, [begin, end) with end - begin = prod(shape) * dtype size;
// data is little-endian, row-major (C order). A shape [] is a scalar (one element).
//
// The reader accepts a file only if it is exactly what the format describes; anything else is one Error
// naming the file and the problem: shorter than 8 bytes; N over 100 MB (the library's limit) or past the
// end of the file; a header that is not valid JSON or not an object; __metadata__ not a string -> string
// object; an entry that is not an object with exactly the keys dtype, shape, data_offsets; an unknown dtype;
// a shape that is not a list of whole numbers >= 0; element count * dtype size != end - begin (or
// overflowing); begin > end; duplicate tensor names; tensors that overlap, leave a hole between them or
// before the first, end past the data section, or do not reach its end (the tensors, sorted by offset, must
// cover the data section exactly, as the library checks). The file is mmap'ed read-only; tensor bytes are
// views into it.
//
// The writer produces what the Python/Rust library writes byte for byte: tensors ordered by dtype
// (descending in the library's dtype order below) then by name, both in the header and in the data
// section; compact JSON ({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}), "__metadata__" first
// (keys sorted; the library's order is a hash map's), header padded with spaces to a multiple of 8 so
// every tensor starts 8-byte aligned. Writing is atomic: a temporary file beside the target, then rename.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace llmq {

// In the safetensors library's order (increasing alignment), which its writer sorts by.
enum class Dtype { BOOL, U8, I8, F8_E5M2, F8_E4M3, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64 };

const char* dtype_name(Dtype d);         // "F32", "BF16", ...
size_t dtype_size(Dtype d);              // bytes per element
bool parse_dtype(const std::string& name, Dtype* out);  // false for an unknown name

struct SafeTensorInfo {
    std::string name;
    Dtype dtype = Dtype::F32;
    std::vector<int64_t> shape;
    uint64_t begin = 0, end = 0;  // byte span in the data section
    int64_t numel() const;        // product of shape (1 for a scalar)
};

class SafeTensorsFile {
  public:
    // mmaps and validates path. Errors: "<path>: <problem>".
    static SafeTensorsFile open(const std::string& path);
    // Validates an in-memory file (copied); source names it in errors. For tests and the fuzzer.
    static SafeTensorsFile from_bytes(const void* bytes, size_t size, const std::string& source);

    const std::string& source() const { return source_; }
    // every tensor, sorted by data offset (= the order of the data section)
    const std::vector<SafeTensorInfo>& tensors() const { return tensors_; }
    const std::map<std::string, std::string>& metadata() const { return metadata_; }
    const SafeTensorInfo* find(const std::string& name) const;  // nullptr when absent
    const SafeTensorInfo& at(const std::string& name) const;    // Error naming the file and tensor
    // the tensor's raw little-endian bytes (end - begin of them), valid while this object lives
    const uint8_t* bytes(const SafeTensorInfo& t) const { return data_ + t.begin; }
    // the tensor widened to fp32: F32 as is, F16 and BF16 exactly; Error for another dtype
    std::vector<float> to_float(const std::string& name) const;

  private:
    std::string source_;
    std::shared_ptr<const void> storage_;  // the mapping or the copy; keeps data_ alive
    const uint8_t* data_ = nullptr;        // start of the data section
    std::vector<SafeTensorInfo> tensors_;
    std::map<std::string, size_t> index_;  // name -> position in tensors_
    std::map<std::string, std::string> metadata_;

    void parse(const uint8_t* file, size_t size);
};

struct SafeTensorToWrite {
    std::string name;
    Dtype dtype = Dtype::F32;
    std::vector<int64_t> shape;
    const void* data = nullptr;  // prod(shape) * dtype_size(dtype) bytes, little-endian row-major
};

// The whole file as bytes. Throws Error (naming `what`) on a duplicate or reserved name ("__metadata__"),
// a name or metadata string that is not valid UTF-8, a negative dimension, or a null data pointer for a
// non-empty tensor.
std::vector<uint8_t> serialize_safetensors(const std::vector<SafeTensorToWrite>& tensors,
                                           const std::map<std::string, std::string>& metadata = {},
                                           const std::string& what = "safetensors");
// Writes serialize_safetensors(...) to path atomically (path + ".tmp", then rename).
void write_safetensors(const std::string& path, const std::vector<SafeTensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace llmq
