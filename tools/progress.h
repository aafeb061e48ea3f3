// progress: a terminal progress bar for long jobs (tokenizing a corpus, training a vocabulary, training a
// model): done/total, percent, rate (MB/s, tokens/s, steps/s ...) and ETA.
//
// On a terminal it redraws one line in place with '\r' at most ~10 times a second; when the stream is not a
// terminal (a log file, CI) it prints a plain line at each quarter of the work and one at the end, so logs
// stay short. A total of 0 means "unknown": the bar shows done and rate only.
//
//   Progress bar("tokenize", total_bytes, Progress::Bytes);
//   for (...) bar.add(chunk_bytes);
//   bar.finish();   // final line with the elapsed time and the average rate
//
// Not thread-safe: update it from one thread (e.g. the writer of a pipeline).
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

namespace llmq {

class Progress {
  public:
    // How done/total are counted: Bytes are shown as MB and MB/s; Count shows plain numbers with
    // `unit` as the name (e.g. "tok" -> "1.2M tok/s").
    enum Kind { Bytes, Count };

    Progress(std::string label, double total, Kind kind = Count, std::string unit = "it", FILE* stream = stderr);
    // Without finish() (an error unwinding), prints no final line: on a terminal it only ends the bar's
    // line so that the error message starts on a fresh one.
    ~Progress();
    Progress(const Progress&) = delete;
    Progress& operator=(const Progress&) = delete;

    void add(double delta) { update(done_ + delta); }
    void update(double done);
    void set_total(double total) { total_ = total; }
    // Prints the final line (newline-terminated). Idempotent.
    void finish();
    // The text of the status line (no '\r' or newline): "label  45.0%  12.3/27.0 MB  5.1 MB/s  ETA 3s".
    std::string line() const;

    double done() const { return done_; }
    double elapsed() const;
    // The average rate since the start, in units (bytes, items) per second.
    double rate() const;

  private:
    void draw(bool final_line);

    std::string label_, unit_;
    double total_, done_ = 0;
    Kind kind_;
    FILE* stream_;
    bool tty_, finished_ = false;
    double start_, last_draw_ = 0;
    int next_quarter_ = 1;  // non-TTY: the next quarter of total at which a line is printed
};

// "1.23 MB" for bytes, "4.56M" for counts: a short human figure.
std::string human_count(double x, Progress::Kind kind);

}  // namespace llmq
