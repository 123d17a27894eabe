// Pieces every minigrad kernel shares: index types, the dropout hash, warp and block sums.
// Kernels are templates over the float type T (float or double); one thread block's size
// is always a multiple of 32, so every warp is full.
typedef unsigned int u32;
typedef long long i64;

#define FULL_MASK 0xffffffffu
#define MG_INF __int_as_float(0x7f800000)        // NVRTC has no math.h: +inf and a NaN
#define MG_NAN __int_as_float(0x7fffffff)

// lowbias32 (Chris Wellons), the mixer of minigrad/dropout.py.
__device__ __forceinline__ u32 mix32(u32 x) {
    x ^= x >> 16; x *= 0x7feb352du;
    x ^= x >> 15; x *= 0x846ca68bu;
    x ^= x >> 16;
    return x;
}

// Dropout's keep decision for flat element i of the site seeded `seed`; `second` is
// mix32(seed + 0x9E3779B9), computed once on the host (minigrad/dropout.py element_hash).
__device__ __forceinline__ bool dropout_keep(u32 seed, u32 second, unsigned long long i, u32 threshold) {
    u32 h = mix32(mix32((u32)i ^ seed) ^ ((u32)(i >> 32) + second));
    return (h >> 8) >= threshold;
}

// The dropout mask's value at element i: 1 without dropout, else 0 or 1 / (1 - p) (scale).
template <typename T>
__device__ __forceinline__ T dropout_factor(int use_dropout, u32 seed, u32 second, unsigned long long i,
                                            u32 threshold, T scale) {
    if (!use_dropout) return T(1);
    return dropout_keep(seed, second, i, threshold) ? scale : T(0);
}

template <typename T> __device__ __forceinline__ T warp_sum(T v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(FULL_MASK, v, offset);
    return v;
}

template <typename T> __device__ __forceinline__ T warp_max(T v) {
    for (int offset = 16; offset > 0; offset >>= 1) v = max(v, __shfl_xor_sync(FULL_MASK, v, offset));
    return v;
}

// The sum of v over the block, returned to every thread, in a fixed order (deterministic).
// shared: 32 elements of __shared__ scratch; consecutive calls may reuse it.
template <typename T> __device__ T block_sum(T v, T* shared) {
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    v = warp_sum(v);
    __syncthreads();                            // the previous call has read shared
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    v = lane < (int)(blockDim.x / 32) ? shared[lane] : T(0);
    return warp_sum(v);
}

template <typename T> __device__ T block_max(T v, T* shared) {
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    v = lane < (int)(blockDim.x / 32) ? shared[lane] : T(-MG_INF);
    return warp_max(v);
}

// The flat index of this thread in a 1-D grid of 1-D blocks.
__device__ __forceinline__ i64 thread_index() {
    return (i64)blockIdx.x * blockDim.x + threadIdx.x;
}
