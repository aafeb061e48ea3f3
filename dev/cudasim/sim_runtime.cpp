// sim_runtime.cpp: the CUDA runtime calls llmq's host code makes, on host memory (see sim.h). "Device"
// buffers are malloc'd, copies are memcpy, launches run synchronously, the device has OPTIN bytes of
// opt-in shared memory per block (default 232448, an H100's; 166912 is an A100's).
#include "sim.h"

extern "C" {
cudaError_t cudaGetDeviceCount(int* n) { *n = 1; return cudaSuccess; }
cudaError_t cudaGetDevice(int* d) { *d = 0; return cudaSuccess; }
cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr attr, int) {
    if (attr == cudaDevAttrMultiProcessorCount) *v = 132;
    else *v = getenv("OPTIN") ? atoi(getenv("OPTIN")) : 232448;
    return cudaSuccess;
}
cudaError_t cudaFuncSetAttribute(const void*, cudaFuncAttribute, int) { return cudaSuccess; }
cudaError_t cudaGetLastError() { return cudaSuccess; }
const char* cudaGetErrorString(cudaError_t) { return "cudasim error"; }
cudaError_t cudaMalloc(void** p, size_t n) { *p = malloc(n); return *p ? cudaSuccess : cudaErrorMemoryAllocation; }
cudaError_t cudaFree(void* p) { free(p); return cudaSuccess; }
cudaError_t cudaMemcpy(void* d, const void* s, size_t n, cudaMemcpyKind) { memcpy(d, s, n); return cudaSuccess; }
cudaError_t cudaMemset(void* d, int v, size_t n) { memset(d, v, n); return cudaSuccess; }
cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
}
