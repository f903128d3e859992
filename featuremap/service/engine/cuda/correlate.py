"""The direct correlation on the GPU: frame tiles and kernel taps in shared memory, accumulators in registers."""

from numba import cuda, float32

from .launch import ACCUMULATORS, KT, RX, TX, TY


# Long by design (64 lines): one kernel is one compilation unit whose RX x KT accumulators must stay
# in registers (tests/engine/test_cuda.py checks the PTX has no local memory); device functions
# taking them as arrays would put them in local memory.
@cuda.jit(cache=True)
def correlate(planes, kernels, oy, ox, stride, rows_per_pass, out):
    """out[n, k] = sum over planes and taps of kernels[k] x the frame's window, every output position.

    planes (N, P, Hp, Wp); kernels (K, P, h, w), K a multiple of KT; out (N, K, Ho, Wo).
    A block of TX x TY threads covers TX*RX x TY outputs and KT kernels: the
    frame rows under them (``rows_per_pass`` template rows at a time) and
    those kernels' taps go to shared memory once, and every thread reuses
    each tap KT x RX times from registers. Grid: (Wo / (TX RX), Ho / TY, N K / KT).
    """
    shared = cuda.shared.array(0, float32)
    acc = cuda.local.array(ACCUMULATORS, float32)
    n_planes, height, width = planes.shape[1], planes.shape[2], planes.shape[3]
    kh, kw = kernels.shape[2], kernels.shape[3]
    chunks = kernels.shape[0] // KT
    n = cuda.blockIdx.z // chunks
    k0 = (cuda.blockIdx.z % chunks) * KT
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    tid = ty * TX + tx
    span_x = (TX * RX - 1) * stride + kw
    tiles_x = (out.shape[3] + TX * RX - 1) // (TX * RX)
    tiles_y = (out.shape[2] + TY - 1) // TY
    for tile_y in range(cuda.blockIdx.y, tiles_y, cuda.gridDim.y):
        for tile_x in range(cuda.blockIdx.x, tiles_x, cuda.gridDim.x):
            x_first = tile_x * TX * RX
            y_first = tile_y * TY
            fx0 = ox + x_first * stride
            fy0 = oy + y_first * stride
            for i in range(ACCUMULATORS):
                acc[i] = 0.0
            for p in range(n_planes):
                for r0 in range(0, kh, rows_per_pass):
                    rows = min(rows_per_pass, kh - r0)
                    tile = ((TY - 1) * stride + rows) * span_x
                    for i in range(tid, tile, TX * TY):
                        fy = fy0 + r0 + i // span_x
                        fx = fx0 + i % span_x
                        shared[i] = planes[n, p, fy, fx] if fy < height and fx < width else float32(0.0)
                    for i in range(tid, rows * kw * KT, TX * TY):
                        t = i % KT
                        j = (i // KT) % kw
                        shared[tile + i] = kernels[k0 + t, p, r0 + i // (KT * kw), j]
                    cuda.syncthreads()
                    for r in range(rows):
                        row = (ty * stride + r) * span_x + tx * stride
                        taps = tile + r * kw * KT
                        for j in range(kw):
                            w0 = shared[taps + j * KT]
                            w1 = shared[taps + j * KT + 1]
                            w2 = shared[taps + j * KT + 2]
                            w3 = shared[taps + j * KT + 3]
                            for q in range(RX):
                                v = shared[row + q * TX * stride + j]
                                acc[q * KT] += w0 * v
                                acc[q * KT + 1] += w1 * v
                                acc[q * KT + 2] += w2 * v
                                acc[q * KT + 3] += w3 * v
                    cuda.syncthreads()
            y = y_first + ty
            if y < out.shape[2]:
                for q in range(RX):
                    x = x_first + tx + q * TX
                    if x < out.shape[3]:
                        for t in range(KT):
                            out[n, k0 + t, y, x] = acc[q * KT + t]


@cuda.jit(cache=True)
def correlate_wide(planes, kernels, oy, ox, stride, out):
    """:func:`correlate` for templates too wide for its shared tile: KT kernels per thread, from global memory."""
    chunks = kernels.shape[0] // KT
    n = cuda.blockIdx.z // chunks
    k0 = (cuda.blockIdx.z % chunks) * KT
    acc = cuda.local.array(KT, float32)
    x_start, y_start = cuda.grid(2)
    step_x, step_y = cuda.gridsize(2)
    for y in range(y_start, out.shape[2], step_y):
        for x in range(x_start, out.shape[3], step_x):
            for t in range(KT):
                acc[t] = 0.0
            y0, x0 = oy + y * stride, ox + x * stride
            for p in range(planes.shape[1]):
                for i in range(kernels.shape[2]):
                    for j in range(kernels.shape[3]):
                        v = planes[n, p, y0 + i, x0 + j]
                        for t in range(KT):
                            acc[t] += kernels[k0 + t, p, i, j] * v
            for t in range(KT):
                out[n, k0 + t, y, x] = acc[t]
