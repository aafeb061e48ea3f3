// json: a small, strict JSON parser (RFC 8259) for vocabulary and config files.
//
// parse_json() turns text into a JsonValue tree: objects (keys kept in file order), arrays, strings
// (every escape decoded, \uXXXX and surrogate pairs written as UTF-8), numbers (double; as_int() checks
// they are whole), true/false/null. Anything else is an Error that names the source and the byte offset
// where parsing stopped: trailing commas, comments, single quotes, leading zeros, control characters
// inside strings, lone surrogates, invalid UTF-8, trailing garbage, nesting deeper than 512.
// Duplicate keys are kept; find() returns the first.
//
// Accessors throw Error on a type mismatch or a missing key ("JSON: expected string, got number");
// callers that know the file name catch and rethrow with it prefixed.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace llmq {

class JsonValue {
  public:
    enum class Type { Null, Bool, Number, String, Array, Object };
    using Member = std::pair<std::string, JsonValue>;

    JsonValue() = default;  // null

    Type type() const { return type_; }
    bool is_null() const { return type_ == Type::Null; }
    bool is_bool() const { return type_ == Type::Bool; }
    bool is_number() const { return type_ == Type::Number; }
    bool is_string() const { return type_ == Type::String; }
    bool is_array() const { return type_ == Type::Array; }
    bool is_object() const { return type_ == Type::Object; }

    // Typed access; each throws Error when the value has another type.
    bool as_bool() const;
    double as_number() const;
    int64_t as_int() const;  // also throws when the number is not a whole number within +-2^53
    const std::string& as_string() const;
    const std::vector<JsonValue>& as_array() const;
    const std::vector<Member>& as_object() const;  // members in file order

    // Object lookup: find() returns nullptr when the key is absent (or this is not an object);
    // at() throws Error naming the key.
    const JsonValue* find(std::string_view key) const;
    const JsonValue& at(std::string_view key) const;
    // Array element; throws Error when out of range.
    const JsonValue& at(size_t index) const;
    size_t size() const;  // elements of an array or members of an object, else 0

    static const char* type_name(Type t);

  private:
    friend class JsonParser;
    Type type_ = Type::Null;
    bool bool_ = false;
    double number_ = 0;
    std::string string_;
    std::vector<JsonValue> array_;
    std::vector<Member> object_;
};

// Parses a whole document. source names the text in error messages (a file path, "config", ...):
//   "<source>: invalid JSON at byte <offset>: <problem>"
JsonValue parse_json(std::string_view text, const std::string& source = "JSON");

// Reads and parses a file; errors name the path.
JsonValue parse_json_file(const std::string& path);

// Reads a whole file into a string; throws Error naming the path when it cannot be read.
std::string read_file_bytes(const std::string& path);

}  // namespace llmq
