// Tests of tools/flags.h: parsing, errors naming the flag, and --help listing every flag with its default.
#include <gtest/gtest.h>

#include "../kernels/common.h"
#include "../tools/flags.h"

using namespace llmq;

namespace {
struct Opts {
    int steps = 17;
    float lr = 3e-4f;
    uint64_t seed = 99;
    std::string mode = "stop", out = "out";
};
void bind(FlagSet& f, Opts& o) {
    f.add("steps", &o.steps, "optimizer steps");
    f.add("lr", &o.lr, "learning rate");
    f.add("seed", &o.seed, "seed");
    f.add("on-nan", &o.mode, "what to do", {"stop", "skip"});
    f.add("out", &o.out, "output dir");
}
std::string parse_error(std::vector<const char*> args) {
    Opts o;
    FlagSet f;
    bind(f, o);
    args.insert(args.begin(), "prog");
    try {
        f.parse((int)args.size(), const_cast<char**>(args.data()));
    } catch (const Error& e) {
        return e.what();
    }
    return "(no error)";
}
}  // namespace

TEST(Flags, ParsesBothFormsAndRecordsWhatWasSet) {
    Opts o;
    FlagSet f;
    bind(f, o);
    const char* argv[] = {"prog", "--steps", "123", "--lr=0.5", "--on-nan", "skip", "--seed", "18446744073709551615"};
    f.parse(8, const_cast<char**>(argv));
    EXPECT_EQ(o.steps, 123);
    EXPECT_EQ(o.lr, 0.5f);
    EXPECT_EQ(o.mode, "skip");
    EXPECT_EQ(o.seed, 18446744073709551615ull);
    EXPECT_TRUE(f.was_set("steps"));
    EXPECT_FALSE(f.was_set("out"));
    auto values = f.values();
    ASSERT_EQ(values.size(), 5u);
    EXPECT_EQ(values[0], std::make_pair(std::string("steps"), std::string("123")));
}

TEST(Flags, BadInputNamesTheFlag) {
    EXPECT_EQ(parse_error({"--steps", "abc"}), "--steps: 'abc' is not an integer");
    EXPECT_EQ(parse_error({"--steps", "5x"}), "--steps: '5x' is not an integer");
    EXPECT_EQ(parse_error({"--lr", "fast"}), "--lr: 'fast' is not a finite number");
    EXPECT_EQ(parse_error({"--seed", "-3"}), "--seed: '-3' is not a non-negative integer");
    EXPECT_EQ(parse_error({"--on-nan", "retry"}), "--on-nan: 'retry' is not one of stop|skip");
    EXPECT_EQ(parse_error({"--bogus", "1"}), "unknown flag --bogus (see --help)");
    EXPECT_EQ(parse_error({"--steps"}), "--steps: missing value");
    EXPECT_EQ(parse_error({"steps"}), "unexpected argument 'steps' (flags are --name VALUE)");
}

TEST(Flags, HelpListsEveryFlagWithItsDefault) {
    Opts o;
    FlagSet f;
    bind(f, o);
    const char* argv[] = {"prog", "--steps", "5"};
    f.parse(3, const_cast<char**>(argv));
    std::string help = f.help();
    for (const char* line : {"--steps N", "optimizer steps (default: 17)", "--lr X", "(default: 0.0003)",
                             "--seed N", "(default: 99)", "--on-nan stop|skip", "(default: stop)", "--out S",
                             "(default: out)"})
        EXPECT_NE(help.find(line), std::string::npos) << line << "\n" << help;
}
