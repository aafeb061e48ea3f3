// safetensors: the strict reader and the byte-exact writer of .safetensors files (safetensors.h).
#include "safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <set>

#include "../kernels/common.h"
#include "float16.h"
#include "json.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors data is little-endian; so is every host we run on");

namespace llmq {

namespace {

constexpr uint64_t kMaxHeaderBytes = 100000000;  // the library's MAX_HEADER_SIZE

struct DtypeEntry {
    Dtype dtype;
    const char* name;
    size_t size;
};
constexpr DtypeEntry kDtypes[] = {
    {Dtype::BOOL, "BOOL", 1}, {Dtype::U8, "U8", 1},   {Dtype::I8, "I8", 1},   {Dtype::F8_E5M2, "F8_E5M2", 1},
    {Dtype::F8_E4M3, "F8_E4M3", 1}, {Dtype::I16, "I16", 2}, {Dtype::U16, "U16", 2}, {Dtype::F16, "F16", 2},
    {Dtype::BF16, "BF16", 2}, {Dtype::I32, "I32", 4}, {Dtype::U32, "U32", 4}, {Dtype::F32, "F32", 4},
    {Dtype::F64, "F64", 8},   {Dtype::I64, "I64", 8}, {Dtype::U64, "U64", 8},
};

// prod(shape) * elem_size, false on overflow of 64 bits
bool byte_count(const std::vector<int64_t>& shape, size_t elem_size, uint64_t* out) {
    uint64_t n = elem_size;
    for (int64_t d : shape)
        if (d < 0 || __builtin_mul_overflow(n, (uint64_t)d, &n)) return false;
    *out = n;
    return true;
}

// A JSON number that is a whole number in [0, 2^53] (exactly representable, as the parser stores doubles)
bool as_count(const JsonValue& v, uint64_t* out) {
    if (!v.is_number()) return false;
    double x = v.as_number();
    if (!(x >= 0 && x <= 9007199254740992.0 && x == std::floor(x))) return false;
    *out = (uint64_t)x;
    return true;
}

// JSON string literal as serde_json writes it: escapes " \ and control characters, nothing else
void append_json_string(std::string& out, const std::string& s) {
    static const char hex[] = "0123456789abcdef";
    out += '"';
    for (unsigned char c : s) {
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\b': out += "\\b"; break;
            case '\f': out += "\\f"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            default:
                if (c < 0x20) {
                    out += "\\u00";
                    out += hex[c >> 4];
                    out += hex[c & 15];
                } else {
                    out += (char)c;
                }
        }
    }
    out += '"';
}

// Well-formed UTF-8 (no overlongs, surrogates or code points past U+10FFFF), which JSON text must be.
bool valid_utf8(const std::string& s) {
    for (size_t i = 0; i < s.size();) {
        const unsigned char c = s[i];
        int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (len == 0 || i + len > s.size()) return false;
        uint32_t cp = len == 1 ? c : c & (0x7f >> len);
        for (int k = 1; k < len; k++) {
            const unsigned char d = s[i + k];
            if ((d >> 6) != 2) return false;
            cp = cp << 6 | (d & 0x3f);
        }
        static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
        i += len;
    }
    return true;
}

}  // namespace

const char* dtype_name(Dtype d) { return kDtypes[(int)d].name; }
size_t dtype_size(Dtype d) { return kDtypes[(int)d].size; }
bool parse_dtype(const std::string& name, Dtype* out) {
    for (const DtypeEntry& e : kDtypes)
        if (name == e.name) {
            *out = e.dtype;
            return true;
        }
    return false;
}

int64_t SafeTensorInfo::numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
}

// ---------------------------------------------------------------- reader

SafeTensorsFile SafeTensorsFile::open(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    LLMQ_CHECK(fd >= 0, "%s: cannot open: %s", path.c_str(), strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        ::close(fd);
        throw Error(format("%s: not a regular file", path.c_str()));
    }
    SafeTensorsFile f;
    f.source_ = path;
    const size_t size = (size_t)st.st_size;
    const uint8_t* base = nullptr;
    if (size > 0) {
        void* p = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
        int err = errno;
        ::close(fd);
        LLMQ_CHECK(p != MAP_FAILED, "%s: cannot mmap %zu bytes: %s", path.c_str(), size, strerror(err));
        f.storage_ = std::shared_ptr<const void>(p, [size](const void* q) { munmap(const_cast<void*>(q), size); });
        base = (const uint8_t*)p;
    } else {
        ::close(fd);
    }
    f.parse(base, size);
    return f;
}

SafeTensorsFile SafeTensorsFile::from_bytes(const void* bytes, size_t size, const std::string& source) {
    SafeTensorsFile f;
    f.source_ = source;
    auto copy = std::make_shared<std::vector<uint8_t>>((const uint8_t*)bytes, (const uint8_t*)bytes + size);
    f.storage_ = copy;
    f.parse(copy->data(), size);
    return f;
}

void SafeTensorsFile::parse(const uint8_t* file, size_t size) {
    const char* src = source_.c_str();
    LLMQ_CHECK(size >= 8, "%s: truncated: %zu bytes, shorter than the 8-byte header length", src, size);
    uint64_t n;
    std::memcpy(&n, file, 8);
    LLMQ_CHECK(n <= kMaxHeaderBytes, "%s: header length %llu is over the 100 MB limit (%llu bytes)", src,
               (unsigned long long)n, (unsigned long long)kMaxHeaderBytes);
    LLMQ_CHECK(n <= size - 8, "%s: header length %llu runs past the end of the file (%zu bytes): truncated?", src,
               (unsigned long long)n, size);
    const uint64_t data_size = size - 8 - n;
    data_ = file + 8 + n;

    // parse errors read "<file> header: invalid JSON at byte <offset>: <problem>"
    const JsonValue root = parse_json(std::string_view((const char*)file + 8, n), source_ + " header");
    LLMQ_CHECK(root.is_object(), "%s: header is a JSON %s, not an object", src, JsonValue::type_name(root.type()));
    bool seen_metadata = false;
    for (const JsonValue::Member& m : root.as_object()) {
        const std::string& name = m.first;
        const JsonValue& v = m.second;
        if (name == "__metadata__") {
            LLMQ_CHECK(!seen_metadata, "%s: duplicate __metadata__ entry", src);
            seen_metadata = true;
            LLMQ_CHECK(v.is_object(), "%s: __metadata__ is a JSON %s, not an object of strings", src,
                       JsonValue::type_name(v.type()));
            for (const JsonValue::Member& kv : v.as_object()) {
                LLMQ_CHECK(kv.second.is_string(), "%s: __metadata__ value of '%s' is a JSON %s, not a string", src,
                           kv.first.c_str(), JsonValue::type_name(kv.second.type()));
                LLMQ_CHECK(metadata_.emplace(kv.first, kv.second.as_string()).second,
                           "%s: duplicate __metadata__ key '%s'", src, kv.first.c_str());
            }
            continue;
        }
        const char* tn = name.c_str();
        LLMQ_CHECK(!index_.count(name), "%s: duplicate tensor name '%s'", src, tn);
        LLMQ_CHECK(v.is_object(), "%s: entry '%s' is a JSON %s, not an object", src, tn, JsonValue::type_name(v.type()));
        std::set<std::string> keys;
        for (const JsonValue::Member& kv : v.as_object()) {
            LLMQ_CHECK(kv.first == "dtype" || kv.first == "shape" || kv.first == "data_offsets",
                       "%s: tensor '%s' has an unknown key '%s' (expected dtype, shape, data_offsets)", src, tn,
                       kv.first.c_str());
            LLMQ_CHECK(keys.insert(kv.first).second, "%s: tensor '%s' has a duplicate key '%s'", src, tn, kv.first.c_str());
        }
        LLMQ_CHECK(keys.size() == 3, "%s: tensor '%s' lacks one of dtype, shape, data_offsets", src, tn);
        SafeTensorInfo t;
        t.name = name;
        const JsonValue& dtype = *v.find("dtype");
        LLMQ_CHECK(dtype.is_string() && parse_dtype(dtype.as_string(), &t.dtype), "%s: tensor '%s' has unknown dtype %s",
                   src, tn, dtype.is_string() ? ("'" + dtype.as_string() + "'").c_str() : "(not a string)");
        const JsonValue& shape = *v.find("shape");
        LLMQ_CHECK(shape.is_array(), "%s: tensor '%s' shape is not a list", src, tn);
        for (const JsonValue& d : shape.as_array()) {
            uint64_t dim;
            LLMQ_CHECK(as_count(d, &dim), "%s: tensor '%s' shape has an entry that is not a whole number >= 0", src, tn);
            t.shape.push_back((int64_t)dim);
        }
        const JsonValue& offsets = *v.find("data_offsets");
        LLMQ_CHECK(offsets.is_array() && offsets.size() == 2 && as_count(offsets.at(0), &t.begin) &&
                       as_count(offsets.at(1), &t.end),
                   "%s: tensor '%s' data_offsets is not a list of two whole numbers >= 0", src, tn);
        LLMQ_CHECK(t.begin <= t.end, "%s: tensor '%s' data_offsets [%llu, %llu) begin after end", src, tn,
                   (unsigned long long)t.begin, (unsigned long long)t.end);
        uint64_t bytes;
        LLMQ_CHECK(byte_count(t.shape, dtype_size(t.dtype), &bytes) && bytes == t.end - t.begin,
                   "%s: tensor '%s' shape and dtype %s need %s bytes but data_offsets [%llu, %llu) hold %llu", src, tn,
                   dtype_name(t.dtype), byte_count(t.shape, dtype_size(t.dtype), &bytes) ? std::to_string(bytes).c_str()
                                                                                          : "more than 2^64",
                   (unsigned long long)t.begin, (unsigned long long)t.end, (unsigned long long)(t.end - t.begin));
        index_[name] = tensors_.size();
        tensors_.push_back(std::move(t));
    }
    // the tensors, in offset order, must tile [0, data_size) exactly
    std::sort(tensors_.begin(), tensors_.end(), [](const SafeTensorInfo& a, const SafeTensorInfo& b) {
        return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
    });
    uint64_t covered = 0;
    for (size_t i = 0; i < tensors_.size(); i++) {
        const SafeTensorInfo& t = tensors_[i];
        index_[t.name] = i;
        LLMQ_CHECK(t.end <= data_size, "%s: tensor '%s' data_offsets [%llu, %llu) run past the end of the %llu-byte "
                   "data section (truncated file?)", src, t.name.c_str(), (unsigned long long)t.begin,
                   (unsigned long long)t.end, (unsigned long long)data_size);
        LLMQ_CHECK(t.begin >= covered, "%s: tensor '%s' data_offsets [%llu, %llu) overlap the previous tensor '%s' "
                   "(ends at %llu)", src, t.name.c_str(), (unsigned long long)t.begin, (unsigned long long)t.end,
                   tensors_[i - 1].name.c_str(), (unsigned long long)covered);
        LLMQ_CHECK(t.begin == covered, "%s: hole in the data section: bytes [%llu, %llu) before tensor '%s' belong to "
                   "no tensor", src, (unsigned long long)covered, (unsigned long long)t.begin, t.name.c_str());
        covered = t.end;
    }
    LLMQ_CHECK(covered == data_size, "%s: hole in the data section: its last %llu bytes (of %llu) belong to no tensor",
               src, (unsigned long long)(data_size - covered), (unsigned long long)data_size);
}

const SafeTensorInfo* SafeTensorsFile::find(const std::string& name) const {
    auto it = index_.find(name);
    return it == index_.end() ? nullptr : &tensors_[it->second];
}

const SafeTensorInfo& SafeTensorsFile::at(const std::string& name) const {
    const SafeTensorInfo* t = find(name);
    LLMQ_CHECK(t, "%s: no tensor named '%s'", source_.c_str(), name.c_str());
    return *t;
}

std::vector<float> SafeTensorsFile::to_float(const std::string& name) const {
    const SafeTensorInfo& t = at(name);
    const size_t n = (size_t)t.numel();
    const uint8_t* p = bytes(t);
    std::vector<float> out(n);
    if (t.dtype == Dtype::F32) {
        if (n) std::memcpy(out.data(), p, n * 4);  // memcpy to an empty vector's null data() is UB
    } else if (t.dtype == Dtype::F16 || t.dtype == Dtype::BF16) {
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            std::memcpy(&h, p + 2 * i, 2);
            out[i] = t.dtype == Dtype::F16 ? f16_to_float(h) : bf16_to_float(h);
        }
    } else {
        throw Error(format("%s: tensor '%s' is %s; only F32, F16 and BF16 convert to float", source_.c_str(),
                           name.c_str(), dtype_name(t.dtype)));
    }
    return out;
}

// ---------------------------------------------------------------- writer

namespace {

// The header bytes (length prefix included) and the tensors in file order.
std::string header_and_order(const std::vector<SafeTensorToWrite>& tensors,
                             const std::map<std::string, std::string>& metadata, const std::string& what,
                             std::vector<const SafeTensorToWrite*>& order, std::vector<uint64_t>& sizes) {
    order.clear();
    std::set<std::string> names;
    for (const SafeTensorToWrite& t : tensors) {
        LLMQ_CHECK(t.name != "__metadata__", "%s: a tensor may not be named __metadata__", what.c_str());
        LLMQ_CHECK(names.insert(t.name).second, "%s: duplicate tensor name '%s'", what.c_str(), t.name.c_str());
        LLMQ_CHECK(valid_utf8(t.name), "%s: tensor name '%s' is not valid UTF-8", what.c_str(), t.name.c_str());
        order.push_back(&t);
    }
    // the library's order: dtype descending, then name
    std::sort(order.begin(), order.end(), [](const SafeTensorToWrite* a, const SafeTensorToWrite* b) {
        return a->dtype != b->dtype ? a->dtype > b->dtype : a->name < b->name;
    });
    std::string json = "{";
    if (!metadata.empty()) {
        json += "\"__metadata__\":{";
        for (auto it = metadata.begin(); it != metadata.end(); ++it) {
            LLMQ_CHECK(valid_utf8(it->first) && valid_utf8(it->second), "%s: __metadata__ entry '%s' is not valid UTF-8",
                       what.c_str(), it->first.c_str());
            if (it != metadata.begin()) json += ',';
            append_json_string(json, it->first);
            json += ':';
            append_json_string(json, it->second);
        }
        json += '}';
    }
    uint64_t offset = 0;
    sizes.clear();
    for (const SafeTensorToWrite* t : order) {
        uint64_t bytes;
        LLMQ_CHECK(byte_count(t->shape, dtype_size(t->dtype), &bytes), "%s: tensor '%s' has a negative or too large "
                   "shape", what.c_str(), t->name.c_str());
        LLMQ_CHECK(bytes == 0 || t->data, "%s: tensor '%s' has no data", what.c_str(), t->name.c_str());
        if (json.size() > 1) json += ',';
        append_json_string(json, t->name);
        json += ":{\"dtype\":\"";
        json += dtype_name(t->dtype);
        json += "\",\"shape\":[";
        for (size_t i = 0; i < t->shape.size(); i++) json += (i ? "," : "") + std::to_string(t->shape[i]);
        json += "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + bytes) + "]}";
        offset += bytes;
        sizes.push_back(bytes);
    }
    json += '}';
    json.append((8 - json.size() % 8) % 8, ' ');
    uint64_t n = json.size();
    std::string out(8, '\0');
    std::memcpy(&out[0], &n, 8);
    return out + json;
}

}  // namespace

std::vector<uint8_t> serialize_safetensors(const std::vector<SafeTensorToWrite>& tensors,
                                           const std::map<std::string, std::string>& metadata,
                                           const std::string& what) {
    std::vector<const SafeTensorToWrite*> order;
    std::vector<uint64_t> sizes;
    std::string header = header_and_order(tensors, metadata, what, order, sizes);
    std::vector<uint8_t> out(header.begin(), header.end());
    for (size_t i = 0; i < order.size(); i++)
        out.insert(out.end(), (const uint8_t*)order[i]->data, (const uint8_t*)order[i]->data + sizes[i]);
    return out;
}

void write_safetensors(const std::string& path, const std::vector<SafeTensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata) {
    std::vector<const SafeTensorToWrite*> order;
    std::vector<uint64_t> sizes;
    std::string header = header_and_order(tensors, metadata, path, order, sizes);
    const std::string tmp = path + ".tmp";
    FILE* f = fopen(tmp.c_str(), "wb");
    LLMQ_CHECK(f, "%s: cannot create: %s", tmp.c_str(), strerror(errno));
    bool ok = fwrite(header.data(), 1, header.size(), f) == header.size();
    for (size_t i = 0; ok && i < order.size(); i++)
        ok = sizes[i] == 0 || fwrite(order[i]->data, 1, sizes[i], f) == sizes[i];
    ok = fflush(f) == 0 && ok;
    ok = fsync(fileno(f)) == 0 && ok;  // the rename must not publish a file whose bytes are not on disk
    int err = errno;
    ok = fclose(f) == 0 && ok;
    if (!ok) {
        remove(tmp.c_str());
        throw Error(format("%s: write failed: %s", tmp.c_str(), strerror(err)));
    }
    if (rename(tmp.c_str(), path.c_str()) != 0) {
        err = errno;
        remove(tmp.c_str());
        throw Error(format("%s: cannot rename %s into place: %s", path.c_str(), tmp.c_str(), strerror(err)));
    }
}

}  // namespace llmq
