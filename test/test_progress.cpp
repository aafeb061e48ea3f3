// Tests of tools/progress.h: the plain (non-terminal) output mode prints a few lines, not one per update.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>

#include "../tools/progress.h"

using namespace llmq;

static std::string read_all(FILE* f) {
    rewind(f);
    std::string s;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) s.append(buf, n);
    return s;
}

static int count_lines(const std::string& s) {
    int n = 0;
    for (char c : s) n += c == '\n';
    return n;
}

TEST(Progress, NonTerminalPrintsQuartersAndFinalLine) {
    FILE* f = tmpfile();
    ASSERT_TRUE(f);
    {
        Progress bar("tokenize", 4e6, Progress::Bytes, "", f);
        for (int i = 0; i < 1000; i++) bar.add(4e3);
        bar.finish();
        bar.finish();  // idempotent
    }
    std::string out = read_all(f);
    fclose(f);
    EXPECT_EQ(count_lines(out), 4) << out;  // 25%, 50%, 75%, final
    EXPECT_EQ(out.find('\r'), std::string::npos) << "no carriage returns in a log";
    EXPECT_NE(out.find("tokenize"), std::string::npos);
    EXPECT_NE(out.find("100.0%"), std::string::npos) << out;
    EXPECT_NE(out.find("4.0 MB/4.0 MB"), std::string::npos) << out;
    EXPECT_NE(out.find("MB/s"), std::string::npos) << out;
}

TEST(Progress, CountsWithUnitAndUnknownTotal) {
    FILE* f = tmpfile();
    ASSERT_TRUE(f);
    {
        Progress bar("merges", 0, Progress::Count, "tok", f);
        bar.update(12345);
        EXPECT_EQ(bar.done(), 12345);
        bar.finish();
    }
    {
        Progress unfinished("abandoned", 100, Progress::Count, "it", f);
        unfinished.update(10);  // below the first quarter: no line
    }  // destroyed without finish(), as when an error unwinds: no final line
    std::string out = read_all(f);
    fclose(f);
    EXPECT_EQ(count_lines(out), 1) << out;
    EXPECT_NE(out.find("12.3k tok"), std::string::npos) << out;
    EXPECT_NE(out.find("tok/s"), std::string::npos) << out;
    EXPECT_EQ(out.find('%'), std::string::npos) << "no percent without a total: " << out;
    EXPECT_EQ(out.find("abandoned"), std::string::npos) << out;
}

TEST(Progress, HumanCounts) {
    EXPECT_EQ(human_count(1.5e6, Progress::Bytes), "1.5 MB");
    EXPECT_EQ(human_count(2.5e9, Progress::Bytes), "2.50 GB");
    EXPECT_EQ(human_count(999, Progress::Count), "999");
    EXPECT_EQ(human_count(1.25e6, Progress::Count), "1.25M");
}
