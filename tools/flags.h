// flags: a small command-line flag table. Each flag is bound to a variable; its default is the variable's
// value when bound, so --help (help()) always lists every flag with its true default.
//
//   FlagSet flags;
//   flags.add("steps", &opts.steps, "optimizer steps");
//   flags.parse(argc, argv, 1);     // "--steps 100" or "--steps=100"; Error naming the flag otherwise
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace llmq {

class FlagSet {
  public:
    void add(const std::string& name, int* value, const std::string& help);
    void add(const std::string& name, int64_t* value, const std::string& help);
    void add(const std::string& name, uint64_t* value, const std::string& help);
    void add(const std::string& name, float* value, const std::string& help);
    // choices, when given, are the only accepted values (listed in the help and in the error).
    void add(const std::string& name, std::string* value, const std::string& help,
             std::vector<std::string> choices = {});

    // Parses argv[begin..argc). Throws Error for an unknown flag, a missing or malformed value.
    void parse(int argc, char** argv, int begin = 1);
    // Sets one flag from text (Error naming --name when it is unknown or the value does not parse).
    void set(const std::string& name, const std::string& value);
    bool has(const std::string& name) const;
    bool was_set(const std::string& name) const;  // given on the command line (or by set())
    // Every flag's current value as text, in the order added.
    std::vector<std::pair<std::string, std::string>> values() const;
    // One line per flag: "  --name VALUE  help (default: X)".
    std::string help() const;

  private:
    enum Type { Int, Int64, UInt64, Float, String };
    struct Flag {
        std::string name, help, default_text;
        Type type;
        void* value;
        std::vector<std::string> choices;
        bool set = false;
    };
    void add_flag(const std::string& name, Type type, void* value, const std::string& help,
                  std::vector<std::string> choices);
    Flag* find(const std::string& name);
    static std::string text_of(const Flag& f);
    std::vector<Flag> flags_;
};

}  // namespace llmq
