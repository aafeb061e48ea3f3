// progress.cpp: the terminal progress bar of progress.h.
#include "progress.h"

#include <unistd.h>

#include <cmath>

#include "../kernels/common.h"

namespace llmq {

std::string human_count(double x, Progress::Kind kind) {
    if (kind == Progress::Bytes) {
        if (x < 1e6) return format("%.1f KB", x / 1e3);
        if (x < 1e9) return format("%.1f MB", x / 1e6);
        return format("%.2f GB", x / 1e9);
    }
    if (x < 1e4) return format("%.0f", x);
    if (x < 1e6) return format("%.1fk", x / 1e3);
    if (x < 1e9) return format("%.2fM", x / 1e6);
    return format("%.2fG", x / 1e9);
}

static std::string human_seconds(double s) {
    if (!std::isfinite(s) || s < 0) return "?";
    if (s < 60) return format("%.0fs", s);
    if (s < 3600) return format("%dm%02ds", (int)s / 60, (int)s % 60);
    return format("%dh%02dm", (int)s / 3600, ((int)s % 3600) / 60);
}

Progress::Progress(std::string label, double total, Kind kind, std::string unit, FILE* stream)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total), kind_(kind), stream_(stream),
      tty_(isatty(fileno(stream))), start_(now_seconds()) {}

Progress::~Progress() {
    if (!finished_ && tty_ && last_draw_ > 0) fputc('\n', stream_);
}

double Progress::elapsed() const { return now_seconds() - start_; }

double Progress::rate() const {
    double t = elapsed();
    return t > 0 ? done_ / t : 0.0;
}

std::string Progress::line() const {
    std::string s = label_;
    if (total_ > 0) {
        double frac = std::min(1.0, done_ / total_);
        s += format("  %5.1f%%", 100.0 * frac);
        if (tty_) {
            const int width = 20;  // a small bar: [#####.....]
            int filled = (int)(frac * width);
            s += "  [" + std::string(filled, '#') + std::string(width - filled, '.') + "]";
        }
    }
    std::string unit = kind_ == Bytes ? "" : " " + unit_;
    std::string done = human_count(done_, kind_);
    s += total_ > 0 ? "  " + done + "/" + human_count(total_, kind_) + unit : "  " + done + unit;
    double r = rate();
    s += "  " + (kind_ == Bytes ? format("%.1f MB/s", r / 1e6) : human_count(r, kind_) + unit + "/s");
    if (total_ > 0 && !finished_) {
        s += "  ETA " + (r > 0 ? human_seconds((total_ - done_) / r) : std::string("?"));
    } else if (finished_) {
        s += "  in " + human_seconds(elapsed());
    }
    return s;
}

void Progress::draw(bool final_line) {
    if (tty_) {
        // \033[K clears what a longer previous line left behind
        fprintf(stream_, "\r%s\033[K%s", line().c_str(), final_line ? "\n" : "");
    } else {
        fprintf(stream_, "%s\n", line().c_str());
    }
    fflush(stream_);
}

void Progress::update(double done) {
    done_ = done;
    if (finished_) return;
    if (tty_) {
        double t = now_seconds();
        if (t - last_draw_ < 0.1) return;
        last_draw_ = t;
        draw(false);
    } else if (total_ > 0 && next_quarter_ < 4 && done_ >= total_ * next_quarter_ / 4.0) {
        while (next_quarter_ < 4 && done_ >= total_ * next_quarter_ / 4.0) next_quarter_++;
        draw(false);
    }
}

void Progress::finish() {
    if (finished_) return;
    finished_ = true;
    draw(true);
}

}  // namespace llmq
