// ordered_pool: run a stream of jobs on N threads and consume the results in input order, with a bounded
// number of jobs in flight. The shard pipeline and the tokenizer's batch mode use it, so their output is
// byte-identical for any thread count and their memory is bounded whatever the input size.
//
//   produce(Job&) -> bool   fills the next job (e.g. reads a chunk of text); false = no more input.
//                           Called by the worker threads one at a time, in order (input is read sequentially).
//   work(Job&, Result&)     does the expensive part (e.g. encodes the chunk), on a worker thread, in parallel.
//   consume(Job&, Result&)  called on the calling thread, once per job, in the order produce made them.
//
// At most max_in_flight jobs exist at once (produced but not yet consumed). The first exception thrown by
// any of the three stops the pool and is rethrown on the calling thread after every worker has joined.
#pragma once

#include <algorithm>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace llmq {

// Number of worker threads to use for "all threads" (requested <= 0): the hardware's count, at least 1.
inline int resolve_threads(int requested) {
    if (requested > 0) return requested;
    return std::max(1u, std::thread::hardware_concurrency());
}

template <typename Job, typename Result, typename Produce, typename Work, typename Consume>
void run_ordered(int threads, size_t max_in_flight, Produce produce, Work work, Consume consume) {
    threads = resolve_threads(threads);
    max_in_flight = std::max<size_t>(max_in_flight, 1);
    struct Slot {
        Job job;
        Result result;
        bool ready = false;
    };
    std::vector<Slot> slots(max_in_flight);  // job i lives in slots[i % max_in_flight]
    std::mutex mu;
    std::condition_variable cv;
    size_t produced = 0, consumed = 0;  // job counters
    bool input_done = false, stop = false;
    std::exception_ptr error;
    std::mutex produce_mu;  // produce() runs one at a time, in order

    auto fail = [&](std::exception_ptr e) {
        std::lock_guard<std::mutex> lock(mu);
        if (!error) error = e;
        stop = true;
        cv.notify_all();
    };

    auto worker = [&]() {
        for (;;) {
            size_t index;
            {
                std::lock_guard<std::mutex> plock(produce_mu);
                {
                    std::unique_lock<std::mutex> lock(mu);
                    cv.wait(lock, [&] { return stop || input_done || produced - consumed < max_in_flight; });
                    if (stop || input_done) return;
                    index = produced;
                }
                Slot& s = slots[index % max_in_flight];
                bool more;
                try {
                    more = produce(s.job);
                } catch (...) {
                    fail(std::current_exception());
                    return;
                }
                std::lock_guard<std::mutex> lock(mu);
                if (!more) {
                    input_done = true;
                    cv.notify_all();
                    return;
                }
                produced++;
            }
            Slot& s = slots[index % max_in_flight];
            try {
                work(s.job, s.result);
            } catch (...) {
                fail(std::current_exception());
                return;
            }
            std::lock_guard<std::mutex> lock(mu);
            s.ready = true;
            cv.notify_all();
        }
    };

    std::vector<std::thread> pool;
    for (int i = 0; i < threads; i++) pool.emplace_back(worker);
    for (;;) {
        Slot* s;
        {
            std::unique_lock<std::mutex> lock(mu);
            cv.wait(lock, [&] {
                return stop || slots[consumed % max_in_flight].ready || (input_done && consumed == produced);
            });
            if (stop || !slots[consumed % max_in_flight].ready) break;  // failed, or everything consumed
            s = &slots[consumed % max_in_flight];
        }
        try {
            consume(s->job, s->result);
        } catch (...) {
            fail(std::current_exception());
            break;
        }
        std::lock_guard<std::mutex> lock(mu);
        s->ready = false;
        consumed++;
        cv.notify_all();
    }
    for (auto& t : pool) t.join();
    if (error) std::rethrow_exception(error);
}

}  // namespace llmq
