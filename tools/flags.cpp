// flags.cpp: parsing, validating and listing command-line flags (see flags.h).
#include "flags.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>

#include "../kernels/common.h"

namespace llmq {

void FlagSet::add_flag(const std::string& name, Type type, void* value, const std::string& help,
                       std::vector<std::string> choices) {
    Flag f{name, help, "", type, value, std::move(choices)};
    f.default_text = text_of(f);
    flags_.push_back(std::move(f));
}

void FlagSet::add(const std::string& name, int* v, const std::string& help) { add_flag(name, Int, v, help, {}); }
void FlagSet::add(const std::string& name, int64_t* v, const std::string& help) { add_flag(name, Int64, v, help, {}); }
void FlagSet::add(const std::string& name, uint64_t* v, const std::string& help) {
    add_flag(name, UInt64, v, help, {});
}
void FlagSet::add(const std::string& name, float* v, const std::string& help) { add_flag(name, Float, v, help, {}); }
void FlagSet::add(const std::string& name, std::string* v, const std::string& help, std::vector<std::string> choices) {
    add_flag(name, String, v, help, std::move(choices));
}

FlagSet::Flag* FlagSet::find(const std::string& name) {
    for (Flag& f : flags_)
        if (f.name == name) return &f;
    return nullptr;
}

bool FlagSet::has(const std::string& name) const {
    for (const Flag& f : flags_)
        if (f.name == name) return true;
    return false;
}

bool FlagSet::was_set(const std::string& name) const {
    for (const Flag& f : flags_)
        if (f.name == name) return f.set;
    return false;
}

std::string FlagSet::text_of(const Flag& f) {
    switch (f.type) {
        case Int: return std::to_string(*(int*)f.value);
        case Int64: return std::to_string(*(int64_t*)f.value);
        case UInt64: return std::to_string(*(uint64_t*)f.value);
        case Float: {  // the shortest text that reads back as the same float
            float v = *(float*)f.value;
            for (int digits = 1;; digits++) {
                std::string s = format("%.*g", digits, v);
                if (strtof(s.c_str(), nullptr) == v || digits >= 9) return s;
            }
        }
        case String: return *(std::string*)f.value;
    }
    return "";
}

void FlagSet::set(const std::string& name, const std::string& text) {
    Flag* f = find(name);
    LLMQ_CHECK(f, "unknown flag --%s (see --help)", name.c_str());
    const char* s = text.c_str();
    char* end = nullptr;
    errno = 0;
    switch (f->type) {
        case Int:
        case Int64: {
            long long v = strtoll(s, &end, 10);
            LLMQ_CHECK(!text.empty() && *end == 0 && errno == 0, "--%s: '%s' is not an integer", name.c_str(), s);
            if (f->type == Int) {
                LLMQ_CHECK(v >= INT32_MIN && v <= INT32_MAX, "--%s: %s is out of range", name.c_str(), s);
                *(int*)f->value = (int)v;
            } else {
                *(int64_t*)f->value = v;
            }
            break;
        }
        case UInt64: {
            unsigned long long v = strtoull(s, &end, 10);
            LLMQ_CHECK(!text.empty() && *end == 0 && errno == 0 && text[0] != '-',
                       "--%s: '%s' is not a non-negative integer", name.c_str(), s);
            *(uint64_t*)f->value = v;
            break;
        }
        case Float: {
            float v = strtof(s, &end);
            LLMQ_CHECK(!text.empty() && *end == 0 && std::isfinite(v), "--%s: '%s' is not a finite number", name.c_str(),
                       s);
            *(float*)f->value = v;
            break;
        }
        case String: {
            if (!f->choices.empty()) {
                bool ok = false;
                std::string list;
                for (const std::string& c : f->choices) {
                    ok = ok || c == text;
                    list += (list.empty() ? "" : "|") + c;
                }
                LLMQ_CHECK(ok, "--%s: '%s' is not one of %s", name.c_str(), s, list.c_str());
            }
            *(std::string*)f->value = text;
            break;
        }
    }
    f->set = true;
}

void FlagSet::parse(int argc, char** argv, int begin) {
    for (int i = begin; i < argc; i++) {
        std::string arg = argv[i];
        LLMQ_CHECK(arg.size() > 2 && arg.compare(0, 2, "--") == 0, "unexpected argument '%s' (flags are --name VALUE)",
                   arg.c_str());
        std::string name = arg.substr(2), value;
        size_t eq = name.find('=');
        if (eq != std::string::npos) {
            value = name.substr(eq + 1);
            name = name.substr(0, eq);
        } else {
            LLMQ_CHECK(find(name), "unknown flag --%s (see --help)", name.c_str());
            LLMQ_CHECK(i + 1 < argc, "--%s: missing value", name.c_str());
            value = argv[++i];
        }
        set(name, value);
    }
}

std::vector<std::pair<std::string, std::string>> FlagSet::values() const {
    std::vector<std::pair<std::string, std::string>> out;
    for (const Flag& f : flags_) out.emplace_back(f.name, text_of(f));
    return out;
}

std::string FlagSet::help() const {
    static const char* kTypeName[] = {"N", "N", "N", "X", "S"};
    std::string out;
    for (const Flag& f : flags_) {
        std::string meta = f.type == String && !f.choices.empty() ? "" : kTypeName[f.type];
        for (size_t i = 0; i < f.choices.size(); i++) meta += (i ? "|" : "") + f.choices[i];
        std::string left = "  --" + f.name + " " + meta;
        if (left.size() < 28) left.resize(28, ' ');
        else left += "  ";
        std::string def = f.default_text.empty() ? "\"\"" : f.default_text;
        out += left + f.help + " (default: " + def + ")\n";
    }
    return out;
}

}  // namespace llmq
