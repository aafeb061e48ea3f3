// checkpoint.cpp: writing and validating the checkpoint format described in checkpoint.h.
#include "checkpoint.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "../kernels/common.h"
#include "../layers/state_bytes.h"

namespace llmq {

static const char kMagic[8] = {'L', 'L', 'M', 'Q', 'C', 'K', 'P', 'T'};
static const char kEndMarker[8] = {'L', 'L', 'M', 'Q', 'E', 'N', 'D', '\0'};
constexpr uint64_t kFnvOffset = 0xcbf29ce484222325ull, kFnvPrime = 0x100000001b3ull;

static uint64_t fnv1a(uint64_t h, const void* data, size_t n) {
    const unsigned char* p = (const unsigned char*)data;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * kFnvPrime;
    return h;
}

const StateSection* CheckpointInfo::section(const std::string& name) const {
    for (const StateSection& s : sections)
        if (s.name == name) return &s;
    return nullptr;
}

std::string CheckpointInfo::flag(const std::string& name, const std::string& fallback) const {
    for (const auto& kv : flags)
        if (kv.first == name) return kv.second;
    return fallback;
}

// ---------------------------------------------------------------------------------------------- writing

namespace {
// A FILE that hashes what it writes and remembers the first failure.
struct HashingWriter {
    FILE* f;
    uint64_t hash = kFnvOffset;
    bool ok = true;
    void write(const void* data, size_t n) {
        if (!ok || n == 0) return;
        hash = fnv1a(hash, data, n);
        ok = fwrite(data, 1, n, f) == n;
    }
};

// The optimizer kind byte: 0 none, 1 fp32 AdamW, 2 8-bit AdamW.
uint8_t optimizer_kind(const AdamW* opt) { return !opt ? 0 : opt->eight_bit() ? 2 : 1; }

// The header's bytes (its length goes before it), in layers/state_bytes.h's little-endian form.
std::vector<uint8_t> header_bytes(const Model& model, const AdamW* opt, const std::vector<uint8_t>& opt_blob, const TrainState& st,
                         const FlagValues& flags, const AdapterSection* adapters,
                         const std::vector<uint8_t>& adapter_blob, const std::vector<StateSection>& sections) {
    const ModelConfig& c = model.config();
    StateWriter h;
    h.put_str(c.name);
    for (int v : {c.vocab_size, c.dim, c.ffn_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.max_seq_len}) h.put<int32_t>(v);
    h.put<float>(c.rope_theta);
    h.put<float>(c.norm_eps);
    h.put<uint8_t>(c.tied_embeddings ? 1 : 0);
    h.put<float>(c.init_std);
    h.put<uint64_t>(model.num_params());
    h.put<uint8_t>(optimizer_kind(opt));
    const AdamW* any_opt = opt ? opt : adapters ? adapters->opt : nullptr;  // a LoRA run has only the adapters'
    h.put<int32_t>(any_opt ? any_opt->steps_taken() : 0);
    if (opt && opt->eight_bit()) h.put<uint64_t>(opt_blob.size());
    h.put<int64_t>(st.step);
    h.put<uint64_t>(st.data_epoch);
    h.put<uint64_t>(st.data_index);
    h.put<uint64_t>(st.rng_state);
    h.put<uint32_t>((uint32_t)flags.size());
    for (const auto& kv : flags) {
        h.put_str(kv.first);
        h.put_str(kv.second);
    }
    h.put<uint8_t>(adapters ? 1 : 0);
    if (adapters) {
        h.put<uint64_t>(adapters->n);
        h.put<uint8_t>(optimizer_kind(adapters->opt));
        if (adapters->opt && adapters->opt->eight_bit()) h.put<uint64_t>(adapter_blob.size());
    }
    h.put<uint32_t>((uint32_t)sections.size());
    for (const StateSection& s : sections) {
        h.put_str(s.name);
        h.put<uint64_t>(s.bytes.size());
    }
    return h.bytes;
}
}  // namespace

void save_checkpoint(const std::string& path, const Model& model, const AdamW* opt, const TrainState& state,
                     const FlagValues& flags, const AdapterSection* adapters,
                     const std::vector<StateSection>& sections) {
    size_t n = model.num_params();
    auto blob_of = [](const AdamW* o) { return o && o->eight_bit() ? o->serialize_8bit() : std::vector<uint8_t>{}; };
    const std::vector<uint8_t> opt_blob = blob_of(opt), adapter_blob = blob_of(adapters ? adapters->opt : nullptr);
    const std::vector<uint8_t> header = header_bytes(model, opt, opt_blob, state, flags, adapters, adapter_blob, sections);
    std::string tmp = path + ".tmp";
    FILE* f = fopen(tmp.c_str(), "wb");
    LLMQ_CHECK(f, "%s: cannot write checkpoint: %s", tmp.c_str(), strerror(errno));
    HashingWriter w{f};
    uint32_t version = kCheckpointVersion, hbytes = (uint32_t)header.size();
    w.write(kMagic, 8);
    w.write(&version, 4);
    w.write(&hbytes, 4);
    w.write(header.data(), header.size());
    auto write_optimizer = [&](const AdamW* o, const std::vector<uint8_t>& blob, size_t count) {
        if (o && o->eight_bit()) {
            w.write(blob.data(), blob.size());
        } else if (o) {  // in the buffer's layout (zero outside the optimizer's tensors)
            std::vector<float> m, v;
            o->fp32_state_as_buffer(count, m, v);
            w.write(m.data(), count * sizeof(float));
            w.write(v.data(), count * sizeof(float));
        }
    };
    w.write(model.params(), n * sizeof(float));
    write_optimizer(opt, opt_blob, n);
    if (adapters) {
        w.write(adapters->params, adapters->n * sizeof(float));
        write_optimizer(adapters->opt, adapter_blob, adapters->n);
    }
    for (const StateSection& s : sections) w.write(s.bytes.data(), s.bytes.size());
    uint64_t hash = w.hash;
    w.write(&hash, 8);
    w.write(kEndMarker, 8);
    bool ok = w.ok && fflush(f) == 0;
    int saved = errno;
    ok = (fclose(f) == 0) && ok;
    if (!ok) {
        remove(tmp.c_str());
        throw Error(format("%s: checkpoint write failed: %s", tmp.c_str(), strerror(saved ? saved : EIO)));
    }
    if (rename(tmp.c_str(), path.c_str()) != 0) {
        saved = errno;
        remove(tmp.c_str());
        throw Error(format("%s: cannot rename %s into place: %s", path.c_str(), tmp.c_str(), strerror(saved)));
    }
}

// ---------------------------------------------------------------------------------------------- reading

namespace {
struct FileCloser {
    void operator()(FILE* f) const { if (f) fclose(f); }
};
using File = std::unique_ptr<FILE, FileCloser>;

// Opens path, parses and validates the header; leaves the file positioned at the parameters.
CheckpointInfo open_checkpoint(const std::string& path, File& file, std::string& prefix) {
    file.reset(fopen(path.c_str(), "rb"));
    LLMQ_CHECK(file, "%s: cannot open checkpoint: %s", path.c_str(), strerror(errno));
    FILE* f = file.get();
    char magic[8];
    uint32_t version = 0, hbytes = 0;
    LLMQ_CHECK(fread(magic, 1, 8, f) == 8 && memcmp(magic, kMagic, 8) == 0, "%s: not an llmq checkpoint (bad magic)",
               path.c_str());
    LLMQ_CHECK(fread(&version, 4, 1, f) == 1, "%s: truncated checkpoint (no version)", path.c_str());
    LLMQ_CHECK(version == 1 || version == kCheckpointVersion, "%s: checkpoint version %u, this build reads versions 1 "
               "to %u", path.c_str(), version, kCheckpointVersion);
    LLMQ_CHECK(fread(&hbytes, 4, 1, f) == 1, "%s: truncated checkpoint (no header size)", path.c_str());
    LLMQ_CHECK(hbytes < (1u << 24), "%s: corrupt checkpoint (header size %u)", path.c_str(), hbytes);
    std::string header(hbytes, '\0');
    LLMQ_CHECK(fread(&header[0], 1, hbytes, f) == hbytes, "%s: truncated checkpoint (header)", path.c_str());

    CheckpointInfo info;
    info.version = version;
    StateReader r((const uint8_t*)header.data(), header.size(), path.c_str(), "checkpoint header");  // bounds-checked
    ModelConfig& c = info.config;
    c.name = r.get_str();
    for (int* v : {&c.vocab_size, &c.dim, &c.ffn_dim, &c.n_layers, &c.n_heads, &c.n_kv_heads, &c.max_seq_len})
        *v = r.get<int32_t>();
    c.rope_theta = r.get<float>();
    c.norm_eps = r.get<float>();
    c.tied_embeddings = r.get<uint8_t>() != 0;
    c.init_std = r.get<float>();
    info.num_params = r.get<uint64_t>();
    const uint8_t kind = r.get<uint8_t>();
    LLMQ_CHECK(kind <= 2, "%s: corrupt checkpoint header (optimizer kind %u)", path.c_str(), kind);
    info.has_optimizer = kind != 0;
    info.optimizer_8bit = kind == 2;
    info.adam_steps_taken = r.get<int32_t>();
    if (info.optimizer_8bit) info.optimizer_8bit_bytes = r.get<uint64_t>();
    info.state.step = r.get<int64_t>();
    info.state.data_epoch = r.get<uint64_t>();
    info.state.data_index = r.get<uint64_t>();
    info.state.rng_state = r.get<uint64_t>();
    uint32_t n_flags = r.get<uint32_t>();
    for (uint32_t i = 0; i < n_flags; i++) {
        std::string k = r.get_str();
        info.flags.emplace_back(k, r.get_str());
    }
    const bool has_adapters = version == 1 ? r.pos < header.size() : r.get<uint8_t>() != 0;
    if (has_adapters) {  // the adapter section's fields
        info.adapter_params = r.get<uint64_t>();
        const uint8_t akind = r.get<uint8_t>();
        LLMQ_CHECK(akind <= 2, "%s: corrupt checkpoint header (adapter optimizer kind %u)", path.c_str(), akind);
        info.adapter_optimizer = akind;
        if (akind == 2) info.adapter_optimizer_8bit_bytes = r.get<uint64_t>();
    }
    uint64_t section_bytes = 0;
    std::vector<uint64_t> section_sizes;
    if (version >= 2) {
        const uint32_t n_sections = r.get<uint32_t>();
        LLMQ_CHECK(n_sections < 1024, "%s: corrupt checkpoint header (%u state sections)", path.c_str(), n_sections);
        for (uint32_t i = 0; i < n_sections; i++) {
            StateSection s;
            s.name = r.get_str();
            const uint64_t bytes = r.get<uint64_t>();
            LLMQ_CHECK(bytes < (1ull << 40), "%s: corrupt checkpoint header (section '%s' of %llu bytes)", path.c_str(),
                       s.name.c_str(), (unsigned long long)bytes);
            section_bytes += bytes;
            section_sizes.push_back(bytes);
            info.sections.push_back(std::move(s));
        }
    }
    LLMQ_CHECK(r.pos == header.size(), "%s: corrupt checkpoint header (%zu unread bytes)", path.c_str(),
               header.size() - r.pos);
    try {
        c.validate();
    } catch (const Error& e) {
        throw Error(format("%s: corrupt checkpoint: %s", path.c_str(), e.what()));
    }

    uint64_t arrays = info.has_optimizer && !info.optimizer_8bit ? 3 : 1;
    uint64_t adapter_arrays = info.adapter_optimizer == 1 ? 3 : 1;
    uint64_t expected = 16 + (uint64_t)hbytes + arrays * info.num_params * 4 + info.optimizer_8bit_bytes +
                        adapter_arrays * info.adapter_params * 4 + info.adapter_optimizer_8bit_bytes + section_bytes + 16;
    struct stat st;
    LLMQ_CHECK(stat(path.c_str(), &st) == 0, "%s: cannot stat checkpoint", path.c_str());
    LLMQ_CHECK((uint64_t)st.st_size == expected,
               "%s: truncated or corrupt checkpoint: %lld bytes, the header promises %llu", path.c_str(),
               (long long)st.st_size, (unsigned long long)expected);
    // the sizes are now known to fit in the file: allocate (load_checkpoint fills them)
    for (size_t i = 0; i < info.sections.size(); i++) info.sections[i].bytes.resize(section_sizes[i]);
    prefix.assign(kMagic, 8);
    prefix.append((const char*)&version, 4);
    prefix.append((const char*)&hbytes, 4);
    prefix += header;
    return info;
}
}  // namespace

CheckpointInfo read_checkpoint_info(const std::string& path) {
    File f;
    std::string prefix;
    return open_checkpoint(path, f, prefix);
}

CheckpointInfo load_checkpoint(const std::string& path, Model& model, AdamW* opt, AdapterSection* adapters) {
    File file;
    std::string prefix;
    CheckpointInfo info = open_checkpoint(path, file, prefix);
    FILE* f = file.get();
    const ModelConfig& c = model.config();
    const ModelConfig& k = info.config;
    LLMQ_CHECK(k.vocab_size == c.vocab_size && k.dim == c.dim && k.ffn_dim == c.ffn_dim && k.n_layers == c.n_layers &&
                   k.n_heads == c.n_heads && k.n_kv_heads == c.n_kv_heads && k.tied_embeddings == c.tied_embeddings,
               "%s: checkpoint model (%s) does not match this model (%s)", path.c_str(), k.describe().c_str(),
               c.describe().c_str());
    size_t n = model.num_params();
    LLMQ_CHECK(info.num_params == n, "%s: checkpoint has %llu parameters, the model %zu", path.c_str(),
               (unsigned long long)info.num_params, n);
    LLMQ_CHECK((info.adapter_params > 0) == (adapters != nullptr),
               "%s: checkpoint %s adapters (%llu parameters), but this run %s (--method)", path.c_str(),
               info.adapter_params ? "holds" : "has no", (unsigned long long)info.adapter_params,
               adapters ? "trains adapters" : "trains no adapters");
    if (adapters) {
        LLMQ_CHECK(adapters->n == info.adapter_params, "%s: checkpoint has %llu adapter parameters, this run %zu (--rank, "
                   "--lora-targets)", path.c_str(), (unsigned long long)info.adapter_params, adapters->n);
        LLMQ_CHECK(!adapters->opt || info.adapter_optimizer == (adapters->opt->eight_bit() ? 2 : 1),
                   "%s: the adapters' optimizer state is %s, this run uses %s (--optimizer)", path.c_str(),
                   info.adapter_optimizer == 2 ? "8-bit AdamW" : info.adapter_optimizer == 1 ? "fp32 AdamW" : "absent",
                   adapters->opt && adapters->opt->eight_bit() ? "8-bit AdamW" : "fp32 AdamW");
    }
    LLMQ_CHECK(!opt || info.has_optimizer, "%s: checkpoint holds weights only, no optimizer state to resume from",
               path.c_str());
    if (opt && info.optimizer_8bit != opt->eight_bit())
        throw Error(format("%s: checkpoint holds %s AdamW state, but this run uses %s AdamW (--optimizer %s)",
                           path.c_str(), info.optimizer_8bit ? "8-bit" : "fp32", opt->eight_bit() ? "8-bit" : "fp32",
                           info.optimizer_8bit ? "adamw8bit" : "adamw"));

    uint64_t hash = fnv1a(kFnvOffset, prefix.data(), prefix.size());
    auto read_floats = [&](float* dst, size_t count, const char* what) {
        LLMQ_CHECK(fread(dst, sizeof(float), count, f) == count, "%s: truncated checkpoint (%s)", path.c_str(), what);
        hash = fnv1a(hash, dst, count * sizeof(float));
    };
    read_floats(model.params(), n, "parameters");
    // an optimizer state of `kind` for `count` parameters, into o (or skipped over when o is null)
    auto read_optimizer = [&](uint8_t kind, uint64_t blob_bytes, AdamW* o, size_t count) {
        if (kind == 2) {
            std::vector<uint8_t> blob(blob_bytes);
            LLMQ_CHECK(fread(blob.data(), 1, blob.size(), f) == blob.size(),
                       "%s: truncated checkpoint (8-bit AdamW state)", path.c_str());
            hash = fnv1a(hash, blob.data(), blob.size());
            if (o) o->deserialize_8bit(blob.data(), blob.size(), path.c_str());
        } else if (kind == 1) {
            std::vector<float> m(count), v(count);
            read_floats(m.data(), count, "AdamW m");
            read_floats(v.data(), count, "AdamW v");
            if (o) o->set_fp32_state_from_buffer(count, m.data(), v.data());
        }
    };
    read_optimizer(!info.has_optimizer ? 0 : info.optimizer_8bit ? 2 : 1, info.optimizer_8bit_bytes, opt, n);
    if (adapters) {
        read_floats(adapters->params, adapters->n, "adapter parameters");
        read_optimizer((uint8_t)info.adapter_optimizer, info.adapter_optimizer_8bit_bytes, adapters->opt, adapters->n);
        if (adapters->opt) adapters->opt->set_steps_taken(info.adam_steps_taken);
    }
    for (StateSection& s : info.sections) {
        LLMQ_CHECK(fread(s.bytes.data(), 1, s.bytes.size(), f) == s.bytes.size(),
                   "%s: truncated checkpoint (state section '%s')", path.c_str(), s.name.c_str());
        hash = fnv1a(hash, s.bytes.data(), s.bytes.size());
    }
    uint64_t stored = 0;
    char end[8];
    LLMQ_CHECK(fread(&stored, 8, 1, f) == 1 && fread(end, 1, 8, f) == 8, "%s: truncated checkpoint (trailer)",
               path.c_str());
    LLMQ_CHECK(memcmp(end, kEndMarker, 8) == 0, "%s: corrupt checkpoint (bad end marker)", path.c_str());
    LLMQ_CHECK(stored == hash, "%s: corrupt checkpoint (checksum mismatch)", path.c_str());
    if (opt) opt->set_steps_taken(info.adam_steps_taken);
    return info;
}

std::string resolve_checkpoint_path(const std::string& arg) {
    struct stat st;
    if (stat(arg.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return arg + "/latest.ckpt";
    if (stat(arg.c_str(), &st) != 0 && stat((arg + ".ckpt").c_str(), &st) == 0) return arg + ".ckpt";
    return arg;
}

}  // namespace llmq
