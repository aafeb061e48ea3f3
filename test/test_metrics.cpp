// Tests of tools/metrics.h: JSON lines, reading numbers back, the resume-truncated log and the SVG plot.
#include <gtest/gtest.h>

#include <cmath>

#include "../tools/metrics.h"
#include "train_test_util.h"

using namespace llmq;
using namespace llmq_test;

TEST(Metrics, JsonLineRoundTripsNumbersAndWritesNullForNaN) {
    Rng rng(3);
    double loss = 2.0 + rng.uniform(), lr = 1e-4 * (1 + rng.uniform());
    std::string line = json_line({{"step", 12}, {"loss", loss}, {"lr", lr}, {"grad_norm", NAN}});
    EXPECT_EQ(line.find("\"step\": 12,"), 1u) << line;
    EXPECT_NE(line.find("\"grad_norm\": null"), std::string::npos) << line;
    double v = -1;
    ASSERT_TRUE(json_number(line, "loss", &v));
    EXPECT_NEAR(v, loss, 1e-8 * loss);
    ASSERT_TRUE(json_number(line, "lr", &v));
    EXPECT_NEAR(v, lr, 1e-8 * lr);
    EXPECT_FALSE(json_number(line, "grad_norm", &v));
    EXPECT_FALSE(json_number(line, "val_loss", &v));
}

TEST(Metrics, ResumeKeepsTheLogUpToTheCheckpointStep) {
    std::string dir = temp_dir("metrics") + "/sub/out";  // created on demand
    Rng rng(5);
    {
        MetricsLog log(dir);
        for (int s = 1; s <= 6; s++) log.log({{"step", (double)s}, {"loss", 5.0 - 0.1 * s + 0.01 * rng.uniform()}});
        log.log({{"step", 3}, {"val_loss", 4.5}});
        log.log({{"step", 6}, {"val_loss", 4.2}});
    }
    MetricsLog resumed(dir, 4);
    EXPECT_EQ(resumed.train().size(), 4u);
    ASSERT_EQ(resumed.val().size(), 1u);
    EXPECT_EQ(resumed.val()[0].loss, 4.5);
    resumed.log({{"step", 5}, {"loss", 4.4}});
    std::string text = read_text(dir + "/metrics.jsonl");
    EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 6) << text;
    EXPECT_EQ(text.find("4.2"), std::string::npos) << "lines past the checkpoint are dropped";
    MetricsLog fresh(dir);
    EXPECT_TRUE(fresh.train().empty());
    EXPECT_EQ(read_text(dir + "/metrics.jsonl"), "");
}

TEST(Metrics, LossPlotHasSeriesAxesTicksAndLabels) {
    std::string dir = temp_dir("metrics_plot");
    std::vector<LossPoint> train, val;
    Rng rng(9);
    for (int s = 1; s <= 200; s++) train.push_back({(double)s, 10.0 * std::exp(-s / 50.0) + 3 + 0.2 * rng.uniform()});
    for (int s = 50; s <= 200; s += 50) val.push_back({(double)s, 10.0 * std::exp(-s / 50.0) + 3.3});
    write_loss_svg(dir + "/loss.svg", train, val, "tiny & <test>");
    std::string svg = read_text(dir + "/loss.svg");
    EXPECT_EQ(svg.find("<svg"), 0u);
    EXPECT_NE(svg.find("</svg>"), std::string::npos);
    EXPECT_EQ(std::count(svg.begin(), svg.end(), '\n') > 20, true);
    EXPECT_NE(svg.find("tiny &amp; &lt;test&gt;"), std::string::npos) << "the title is escaped";
    EXPECT_NE(svg.find(">step</text>"), std::string::npos);
    EXPECT_NE(svg.find("loss (nats/token)"), std::string::npos);
    EXPECT_NE(svg.find(">train loss</text>"), std::string::npos);
    EXPECT_NE(svg.find(">val loss</text>"), std::string::npos);
    EXPECT_NE(svg.find(">200</text>"), std::string::npos) << "x ticks reach the last step";
    EXPECT_NE(svg.find(">100</text>"), std::string::npos);
    EXPECT_NE(svg.find(">4</text>"), std::string::npos) << "y ticks at round losses";
    // losses span ~3.2..12.8: ticks every 2, and the axis ends on ticks (2 and 14)
    EXPECT_NE(svg.find(">2</text>"), std::string::npos);
    EXPECT_NE(svg.find(">14</text>"), std::string::npos);
    EXPECT_EQ(svg.find(">16</text>"), std::string::npos);
    size_t polylines = 0;
    for (size_t p = svg.find("<polyline"); p != std::string::npos; p = svg.find("<polyline", p + 1)) polylines++;
    EXPECT_EQ(polylines, 2u);
    EXPECT_FALSE(file_exists(dir + "/loss.svg.tmp"));
}

TEST(Metrics, LossPlotKeepsEveryPointOfALongRun) {
    // a long run's polyline is far longer than any fixed formatting buffer; every point must survive
    std::string dir = temp_dir("metrics_plot_long");
    std::vector<LossPoint> train;
    Rng rng(3);
    for (int s = 1; s <= 1000; s++) train.push_back({(double)s, 8.0 - s * 0.002 + 0.1 * rng.uniform()});
    write_loss_svg(dir + "/loss.svg", train, {}, "long");
    std::string svg = read_text(dir + "/loss.svg");
    size_t begin = svg.find("points=\"");
    ASSERT_NE(begin, std::string::npos);
    begin += 8;
    size_t end = svg.find('"', begin);
    ASSERT_NE(end, std::string::npos);
    std::string points = svg.substr(begin, end - begin);
    EXPECT_EQ(std::count(points.begin(), points.end(), ','), 1000) << "one x,y pair per step";
    EXPECT_EQ(svg.compare(end, 3, "\"/>"), 0) << "the polyline tag is closed";
}
