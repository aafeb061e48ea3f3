// cuda_common.cu: the out-of-line parts of cuda_common.h (error reporting and GPU detection).
#include "cuda_common.h"

#include <algorithm>

namespace llmq {

void cuda_check(cudaError_t err, const char* call, const char* file, int line) {
    if (err == cudaSuccess) return;
    throw Error(format("CUDA error in %s (%s:%d): %s", call, file, line, cudaGetErrorString(err)));
}

int cuda_device_count(std::string* why) {
    int n = 0;
    const cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess) {
        if (why) *why = cudaGetErrorString(err);
        cudaGetLastError();  // clear the sticky error so later calls do not report it again
        return 0;
    }
    if (n == 0 && why) *why = "the CUDA driver reports no device";
    return n;
}

int grid_stride_blocks(size_t work, int block) {
    static int sms = 0;  // of the current device, read once (llmq runs on one GPU)
    if (sms == 0) {
        int device = 0;
        CUDA_CHECK(cudaGetDevice(&device));
        CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    }
    const size_t blocks = (work + block - 1) / block, cap = (size_t)sms * 8;
    return (int)std::max<size_t>(1, std::min(blocks, cap));
}

}  // namespace llmq
