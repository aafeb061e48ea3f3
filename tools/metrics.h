// metrics: the training log as JSON lines (DIR/metrics.jsonl) and the loss plot (DIR/loss.svg).
//
// Each line of metrics.jsonl is one flat JSON object. Per training step:
//   {"step": 12, "loss": 5.43, "lr": 0.0003, "grad_norm": 1.2, "tokens_per_s": 5400, "mem_bytes": 123456, ...}
// per evaluation: {"step": 100, "val_loss": 4.9, ...}. Non-finite numbers are written as null.
// step is the number of optimizer steps completed (1-based for a step's own line).
// The plot is drawn by hand (no external tools): train and val loss against step, with axes, ticks,
// labels and a legend.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

namespace llmq {

struct LossPoint {
    double step, loss;
};

class MetricsLog {
  public:
    // Creates dir if needed and opens dir/metrics.jsonl. With resume_step >= 0 the existing log is kept up
    // to and including that step (later lines, from a run that went on past the checkpoint, are dropped)
    // and its losses are read back for the plot; otherwise the log starts empty.
    MetricsLog(const std::string& dir, int64_t resume_step = -1);
    ~MetricsLog();
    MetricsLog(const MetricsLog&) = delete;
    MetricsLog& operator=(const MetricsLog&) = delete;

    using Fields = std::vector<std::pair<std::string, double>>;
    // Appends one line (flushed). "loss" and "val_loss" fields also go into the plot's history.
    void log(const Fields& fields);
    // Writes dir/loss.svg from the history.
    void write_plot(const std::string& title) const;

    const std::vector<LossPoint>& train() const { return train_; }
    const std::vector<LossPoint>& val() const { return val_; }
    const std::string& path() const { return path_; }

  private:
    std::string dir_, path_;
    FILE* file_ = nullptr;
    std::vector<LossPoint> train_, val_;
};

// One JSON object of numbers on a line (no newline); non-finite values become null.
std::string json_line(const MetricsLog::Fields& fields);
// The value of "name" in a flat JSON line of numbers; false when absent or null.
bool json_number(const std::string& line, const std::string& name, double* value);

// An SVG line plot of train (and val, with markers) loss against step; atomic write (tmp + rename).
void write_loss_svg(const std::string& path, const std::vector<LossPoint>& train, const std::vector<LossPoint>& val,
                    const std::string& title);

}  // namespace llmq
