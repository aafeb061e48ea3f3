// dynamic_map: the dynamic 8-bit maps and nearest-code search (dynamic_map.h).
#include "dynamic_map.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace llmq {

DynamicMap create_dynamic_map(bool is_signed) {
    std::vector<double> values;
    for (int i = 0; i < 7; i++) {
        int n = is_signed ? (1 << i) : (1 << (i + 1));
        double decade = std::pow(10.0, i - 6);
        for (int k = 0; k < n; k++) {
            // midpoint of [b_k, b_{k+1}] where b = linspace(0.1, 1, n+1)
            double lo = 0.1 + 0.9 * k / n, hi = 0.1 + 0.9 * (k + 1) / n;
            double mid = decade * (lo + hi) / 2;
            values.push_back(mid);
            if (is_signed) values.push_back(-mid);
        }
    }
    values.push_back(0.0);
    values.push_back(1.0);
    std::sort(values.begin(), values.end());
    DynamicMap map;
    for (int i = 0; i < 256; i++) map[i] = (float)values[i];
    return map;
}

const DynamicMap& dynamic_map_signed() {
    static const DynamicMap map = create_dynamic_map(true);
    return map;
}

const DynamicMap& dynamic_map_unsigned() {
    static const DynamicMap map = create_dynamic_map(false);
    return map;
}

uint8_t quantize_to_map(const DynamicMap& map, float x) {
    // Invariant: the answer lies in [lo, hi]. Compare x with the midpoint between map[mid] and map[mid+1]:
    // strictly above it, map[mid+1] or higher is nearer; otherwise (ties included) map[mid] or lower.
    int lo = 0, hi = 255;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        double midpoint = ((double)map[mid] + (double)map[mid + 1]) * 0.5;  // exact in double
        if ((double)x > midpoint) lo = mid + 1;
        else hi = mid;
    }
    return (uint8_t)lo;
}

}  // namespace llmq
