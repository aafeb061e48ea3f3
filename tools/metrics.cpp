// metrics.cpp: the JSONL training log and the hand-drawn SVG loss plot.
#include "metrics.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "../kernels/common.h"

namespace llmq {

std::string json_line(const MetricsLog::Fields& fields) {
    std::string s = "{";
    for (size_t i = 0; i < fields.size(); i++) {
        double v = fields[i].second;
        std::string num;
        if (!std::isfinite(v)) num = "null";
        else if (v == std::floor(v) && std::fabs(v) < 1e15) num = format("%.0f", v);
        else num = format("%.9g", v);
        s += format("%s\"%s\": %s", i ? ", " : "", fields[i].first.c_str(), num.c_str());
    }
    return s + "}";
}

bool json_number(const std::string& line, const std::string& name, double* value) {
    std::string key = "\"" + name + "\":";
    size_t p = line.find(key);
    if (p == std::string::npos) return false;
    const char* s = line.c_str() + p + key.size();
    char* end = nullptr;
    double v = strtod(s, &end);
    if (end == s) return false;  // null or not a number
    *value = v;
    return true;
}

MetricsLog::MetricsLog(const std::string& dir, int64_t resume_step) : dir_(dir), path_(dir + "/metrics.jsonl") {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    LLMQ_CHECK(!ec, "%s: cannot create output directory (--out): %s", dir.c_str(), ec.message().c_str());
    std::vector<std::string> kept;
    if (resume_step >= 0) {
        std::ifstream in(path_);
        std::string line;
        double step;
        while (std::getline(in, line)) {
            if (!json_number(line, "step", &step) || step > (double)resume_step) continue;
            kept.push_back(line);
            double loss;
            if (json_number(line, "loss", &loss)) train_.push_back({step, loss});
            if (json_number(line, "val_loss", &loss)) val_.push_back({step, loss});
        }
    }
    file_ = fopen(path_.c_str(), "w");
    LLMQ_CHECK(file_, "%s: cannot write metrics: %s", path_.c_str(), strerror(errno));
    for (const std::string& l : kept) fprintf(file_, "%s\n", l.c_str());
    fflush(file_);
}

MetricsLog::~MetricsLog() {
    if (file_) fclose(file_);
}

void MetricsLog::log(const Fields& fields) {
    double step = 0;
    for (const auto& f : fields) if (f.first == "step") step = f.second;
    for (const auto& f : fields) {
        if (f.first == "loss") train_.push_back({step, f.second});
        if (f.first == "val_loss") val_.push_back({step, f.second});
    }
    fprintf(file_, "%s\n", json_line(fields).c_str());
    LLMQ_CHECK(fflush(file_) == 0, "%s: write failed: %s", path_.c_str(), strerror(errno));
}

void MetricsLog::write_plot(const std::string& title) const { write_loss_svg(dir_ + "/loss.svg", train_, val_, title); }

// ---------------------------------------------------------------------------------------------- the plot

// A round tick spacing for [lo, hi]: 1, 2 or 5 times a power of ten, about `want` intervals.
static double nice_step(double lo, double hi, int want) {
    double raw = std::max(hi - lo, 1e-12) / want, mag = std::pow(10.0, std::floor(std::log10(raw)));
    for (double m : {1.0, 2.0, 5.0})
        if (m * mag >= raw) return m * mag;
    return 10.0 * mag;
}

static std::vector<double> ticks_between(double lo, double hi, double step) {
    std::vector<double> ticks;
    for (double t = std::ceil(lo / step - 1e-9) * step; t <= hi + step * 1e-9; t += step) ticks.push_back(t);
    return ticks;
}

static std::string tick_label(double v, double step) {
    if (std::fabs(v) < step * 1e-6) v = 0;
    if (step >= 1 && std::fabs(v) < 1e7) return format("%.0f", v);
    int decimals = std::max(0, (int)std::ceil(-std::log10(step) - 1e-9));
    return format("%.*f", decimals, v);
}

static std::string xml_escape(const std::string& s) {
    std::string out;
    for (char c : s) {
        if (c == '<') out += "&lt;";
        else if (c == '>') out += "&gt;";
        else if (c == '&') out += "&amp;";
        else out += c;
    }
    return out;
}

void write_loss_svg(const std::string& path, const std::vector<LossPoint>& train, const std::vector<LossPoint>& val,
                    const std::string& title) {
    const double W = 800, H = 500, left = 80, right = 30, top = 50, bottom = 70;
    const double pw = W - left - right, ph = H - top - bottom;
    double xmin = 0, xmax = 1, ymin = INFINITY, ymax = -INFINITY;
    for (const auto* series : {&train, &val})
        for (const LossPoint& p : *series) {
            if (!std::isfinite(p.loss)) continue;
            xmax = std::max(xmax, p.step);
            ymin = std::min(ymin, p.loss);
            ymax = std::max(ymax, p.loss);
        }
    if (!(ymin <= ymax)) ymin = 0, ymax = 1;
    if (ymax - ymin < 1e-6) ymin -= 0.5, ymax += 0.5;
    const double ystep = nice_step(ymin, ymax, 6), xstep = nice_step(xmin, xmax, 8);
    ymin = std::floor(ymin / ystep) * ystep;  // the axes end on ticks
    ymax = std::ceil(ymax / ystep) * ystep;
    xmax = std::ceil(xmax / xstep) * xstep;
    const std::vector<double> yt = ticks_between(ymin, ymax, ystep), xt = ticks_between(xmin, xmax, xstep);
    auto X = [&](double s) { return left + (s - xmin) / (xmax - xmin) * pw; };
    auto Y = [&](double l) { return top + (ymax - l) / (ymax - ymin) * ph; };

    std::string svg = format("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
                             "viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\" font-size=\"13\">\n"
                             "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
                             W, H, W, H);
    svg += format("<text x=\"%.0f\" y=\"28\" text-anchor=\"middle\" font-size=\"16\">%s</text>\n", W / 2,
                  xml_escape(title).c_str());
    for (double t : yt) {
        svg += format("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e0e0e0\"/>\n", left, Y(t),
                      left + pw, Y(t));
        svg += format("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n", left - 5, Y(t),
                      left, Y(t));
        svg += format("<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n", left - 8, Y(t) + 4,
                      tick_label(t, ystep).c_str());
    }
    for (double t : xt) {
        svg += format("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e0e0e0\"/>\n", X(t), top, X(t),
                      top + ph);
        svg += format("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n", X(t), top + ph,
                      X(t), top + ph + 5);
        svg += format("<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n", X(t), top + ph + 20,
                      tick_label(t, xstep).c_str());
    }
    svg += format("<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"black\"/>\n",
                  left, top, pw, ph);
    svg += format("<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">step</text>\n", left + pw / 2, H - 20);
    svg += format("<text x=\"20\" y=\"%.1f\" text-anchor=\"middle\" transform=\"rotate(-90 20 %.1f)\">loss "
                  "(nats/token)</text>\n",
                  top + ph / 2, top + ph / 2);
    auto polyline = [&](const std::vector<LossPoint>& s, const char* color, bool markers) {
        std::string pts;
        for (const LossPoint& p : s)
            if (std::isfinite(p.loss)) pts += format("%.1f,%.1f ", X(p.step), Y(p.loss));
        svg += format("<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" points=\"%s\"/>\n", color,
                      pts.c_str());
        if (markers)
            for (const LossPoint& p : s)
                if (std::isfinite(p.loss))
                    svg += format("<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n", X(p.step), Y(p.loss),
                                  color);
    };
    polyline(train, "#1f77b4", false);
    polyline(val, "#ff7f0e", true);
    double lx = left + pw - 150, ly = top + 12;  // legend, top right inside the plot
    svg += format("<rect x=\"%.1f\" y=\"%.1f\" width=\"140\" height=\"48\" fill=\"white\" stroke=\"#999\"/>\n", lx,
                  ly);
    svg += format("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#1f77b4\" stroke-width=\"2\"/>"
                  "<text x=\"%.1f\" y=\"%.1f\">train loss</text>\n",
                  lx + 10, ly + 16, lx + 40, ly + 16, lx + 48, ly + 20);
    svg += format("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ff7f0e\" stroke-width=\"2\"/>"
                  "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"#ff7f0e\"/><text x=\"%.1f\" y=\"%.1f\">val "
                  "loss</text>\n",
                  lx + 10, ly + 36, lx + 40, ly + 36, lx + 25, ly + 36, lx + 48, ly + 40);
    svg += "</svg>\n";

    std::string tmp = path + ".tmp";
    FILE* f = fopen(tmp.c_str(), "w");
    LLMQ_CHECK(f, "%s: cannot write plot: %s", tmp.c_str(), strerror(errno));
    bool ok = fwrite(svg.data(), 1, svg.size(), f) == svg.size();
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp.c_str(), path.c_str()) != 0) {
        remove(tmp.c_str());
        throw Error(format("%s: cannot write plot", path.c_str()));
    }
}

}  // namespace llmq
