"""Frames into planes on the GPU: padding, offsets, magnitudes (make_planes), row and column scans."""

from numba import cuda, float32, float64

from .launch import BLOCK_THREADS, COLUMN_THREADS, LINE_ROWS, LINE_THREADS, MAX_CHANNELS, PX


@cuda.jit(device=True, inline="always")
def _source(i, n, border):
    """The frame index that padded index ``i`` reads (OpenCV's borders), or -1 for the constant border.

    border: 0 constant, 1 reflect-101, 2 replicate.
    """
    if 0 <= i < n:
        return i
    if border == 0:
        return -1
    if border == 2:
        return 0 if i < 0 else n - 1
    if n == 1:
        return 0
    while i < 0 or i >= n:
        if i < 0:
            i = -i
        if i >= n:
            i = 2 * n - 2 - i
    return i


@cuda.jit(cache=True)
def channel_sums(frames, top, left, height, width, border, border_value, sums):
    """Add each channel's sum over the padded frame (float64) into ``sums`` (N, C), zeroed first."""
    partial = cuda.shared.array((MAX_CHANNELS, BLOCK_THREADS), float64)
    own = cuda.local.array(MAX_CHANNELS, float64)
    x0, y0 = cuda.grid(2)
    step_x, step_y = cuda.gridsize(2)
    n = cuda.blockIdx.z
    tid = cuda.threadIdx.y * PX + cuda.threadIdx.x
    channels = frames.shape[3]
    for c in range(channels):
        own[c] = 0.0
    for y in range(y0, height, step_y):
        sy = _source(y - top, frames.shape[1], border)
        for x in range(x0, width, step_x):
            sx = _source(x - left, frames.shape[2], border)
            for c in range(channels):
                v = float32(border_value) if sy < 0 or sx < 0 else float32(frames[n, sy, sx, c])
                own[c] += float64(v)
    for c in range(channels):
        partial[c, tid] = own[c]
    cuda.syncthreads()
    step = BLOCK_THREADS // 2
    while step > 0:
        if tid < step:
            for c in range(channels):
                partial[c, tid] += partial[c, tid + step]
        cuda.syncthreads()
        step //= 2
    if tid == 0:
        for c in range(channels):
            cuda.atomic.add(sums, (n, c), partial[c, 0])


@cuda.jit(cache=True)
def make_planes(frames, top, left, border, border_value, sums, inv_count, planes, magnitudes):
    """Pad, convert and offset the frames into float32 planes (N, C, Hp, Wp); their largest |value| per frame.

    The offset of channel c is float32(sums[n, c] * inv_count): the channel's
    mean (the ccoeff pair) or the templates' offset (the sqdiff pair, with
    inv_count 1), as the CPU path takes them off.
    """
    largest = cuda.shared.array(BLOCK_THREADS, float32)
    x0, y0 = cuda.grid(2)
    step_x, step_y = cuda.gridsize(2)
    n = cuda.blockIdx.z
    tid = cuda.threadIdx.y * PX + cuda.threadIdx.x
    height, width = planes.shape[2], planes.shape[3]
    most = float32(0.0)
    for y in range(y0, height, step_y):
        sy = _source(y - top, frames.shape[1], border)
        for x in range(x0, width, step_x):
            sx = _source(x - left, frames.shape[2], border)
            for c in range(planes.shape[1]):
                v = float32(border_value) if sy < 0 or sx < 0 else float32(frames[n, sy, sx, c])
                v = v - float32(sums[n, c] * inv_count)
                planes[n, c, y, x] = v
                most = max(most, abs(v))
    largest[tid] = most
    cuda.syncthreads()
    step = BLOCK_THREADS // 2
    while step > 0:
        if tid < step:
            largest[tid] = max(largest[tid], largest[tid + step])
        cuda.syncthreads()
        step //= 2
    if tid == 0:
        cuda.atomic.max(magnitudes, n, float64(largest[0]))


@cuda.jit(device=True, inline="always")
def _line_value(planes, n, y, x, q, n_planes, per_plane):
    """Entry x of row y of line q: plane q (q < C), else the squares, per plane (ssim) or summed over planes."""
    if q < n_planes:
        return float64(planes[n, q, y, x])
    if per_plane:
        v = float64(planes[n, q - n_planes, y, x])
        return v * v
    total = 0.0
    for c in range(n_planes):
        v = float64(planes[n, c, y, x])
        total += v * v
    return total


@cuda.jit(cache=True)
def row_prefix(planes, prefix, sqprefix):
    """Float64 running sums along each row: prefix (N, C, Hp, Wp+1) per plane; sqprefix of squares,
    (N, 1, ...) over every plane or (N, C, ...) per plane (ssim).

    A block takes LINE_ROWS rows, LINE_THREADS threads each (grid: row
    groups, N): each thread sums a stretch of its row, the row's threads scan
    their totals in shared memory, and each thread writes its stretch's
    running sums from its offset. A row costs Wp / LINE_THREADS sequential
    steps, not Wp.
    """
    totals = cuda.shared.array((LINE_ROWS, LINE_THREADS), float64)
    n = cuda.blockIdx.y
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    n_planes, height, width = planes.shape[1], planes.shape[2], planes.shape[3]
    per_plane = sqprefix.shape[1] > 1
    lines = n_planes + sqprefix.shape[1]
    stretch = (width + LINE_THREADS - 1) // LINE_THREADS
    x0 = min(tx * stretch, width)
    x1 = min(x0 + stretch, width)
    groups = (height + LINE_ROWS - 1) // LINE_ROWS
    for group in range(cuda.blockIdx.x, groups, cuda.gridDim.x):
        y = group * LINE_ROWS + ty
        inside = y < height
        for q in range(lines):
            own = 0.0
            if inside:
                for x in range(x0, x1):
                    own += _line_value(planes, n, y, x, q, n_planes, per_plane)
            totals[ty, tx] = own
            cuda.syncthreads()
            # Inclusive scan of the row's totals (Hillis-Steele), read and written in turn.
            step = 1
            while step < LINE_THREADS:
                before = totals[ty, tx - step] if tx >= step else 0.0
                cuda.syncthreads()
                totals[ty, tx] += before
                cuda.syncthreads()
                step *= 2
            running = totals[ty, tx] - own
            cuda.syncthreads()  # every thread has read its offset before the next line's totals
            if not inside:
                continue
            if q < n_planes:
                if tx == 0:
                    prefix[n, q, y, 0] = 0.0
                for x in range(x0, x1):
                    running += _line_value(planes, n, y, x, q, n_planes, per_plane)
                    prefix[n, q, y, x + 1] = running
            else:
                if tx == 0:
                    sqprefix[n, q - n_planes, y, 0] = 0.0
                for x in range(x0, x1):
                    running += _line_value(planes, n, y, x, q, n_planes, per_plane)
                    sqprefix[n, q - n_planes, y, x + 1] = running


@cuda.jit(cache=True)
def column_prefix(rows, table):
    """Integral images (N, C, Hp+1, Wp+1) from row prefix sums (N, C, Hp, Wp+1): each row added to the one below.

    A block covers PX columns (grid: column groups, C, N); its COLUMN_THREADS
    rows of threads each sum a stretch of the rows, add the stretches above
    theirs, and write their running sums: Hp / COLUMN_THREADS steps a thread.
    """
    above = cuda.shared.array((COLUMN_THREADS, PX), float64)
    c = cuda.blockIdx.y
    n = cuda.blockIdx.z
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    height = rows.shape[2]
    stretch = (height + COLUMN_THREADS - 1) // COLUMN_THREADS
    y0 = min(ty * stretch, height)
    y1 = min(y0 + stretch, height)
    groups = (table.shape[3] + PX - 1) // PX
    for group in range(cuda.blockIdx.x, groups, cuda.gridDim.x):
        x = group * PX + tx
        inside = x < table.shape[3]
        own = 0.0
        if inside:
            for y in range(y0, y1):
                own += rows[n, c, y, x]
        above[ty, tx] = own
        cuda.syncthreads()
        running = 0.0
        for j in range(ty):
            running += above[j, tx]
        cuda.syncthreads()  # read before the next group's totals overwrite them
        if inside:
            if ty == 0:
                table[n, c, 0, x] = 0.0
            for y in range(y0, y1):
                running += rows[n, c, y, x]
                table[n, c, y + 1, x] = running
