"""The Triton kernels of :mod:`.triton_attention` (imported on first use,
so that ``TRITON_INTERPRET=1`` set before it runs them in the interpreter
and the package imports without Triton).  See that module for the method.
"""
import triton
import triton.language as tl

# Helpers, inlined into the kernels.  Tensors are row-major
# [rows, H, W]; a block of edges loads one head's rows as fp32.


@triton.jit
def _program(ROW, START, END):
    """``(item, head, row, first edge, end)`` of this program."""
    item = tl.program_id(0)
    return (item, tl.program_id(1), tl.load(ROW + item).to(tl.int64),
            tl.load(START + item), tl.load(END + item))


@triton.jit
def _lanes(BLOCK: tl.constexpr, width):
    """Offsets ``0 .. BLOCK - 1`` and which of them are below ``width``."""
    offs = tl.arange(0, BLOCK)
    return offs, offs < width


@triton.jit
def _edge_block(NODE, e0, lanes, end, mask_c):
    """One block of a row's edges: positions, valid lanes, their nodes
    (``NODE`` at those positions) and the valid lanes of a key tile."""
    offs_e = e0 + lanes
    mask_e = offs_e < end
    node = tl.load(NODE + offs_e, mask=mask_e, other=0)
    return offs_e, mask_e, node, mask_e[:, None] & mask_c[None, :]


@triton.jit
def _row(X, row, h, H, W, cols, mask_cols):
    """One head's row of ``X`` (``[W]``, fp32)."""
    return tl.load(X + (row * H + h) * W + cols, mask=mask_cols,
                   other=0.0).to(tl.float32)


@triton.jit
def _gather(X, rows, mask, h, H, W, cols):
    """One head's rows ``X[rows]`` for a block of edges (``[BLOCK_E, W]``,
    fp32; ``mask`` the valid ``[BLOCK_E, W]`` lanes)."""
    return tl.load(X + (rows[:, None] * H + h) * W + cols[None, :],
                   mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _rows(X, rows, EX, edges, mask, h, H, W, cols,
          HAS_EX: tl.constexpr):
    """``X[rows] (+ EX[edges])``: node rows plus the edges' terms."""
    x = _gather(X, rows, mask, h, H, W, cols)
    if HAS_EX:
        x += _gather(EX, edges, mask, h, H, W, cols)
    return x


@triton.jit
def _per_edge(X, edges, mask_e, h, H):
    """A block of an ``[E, H]`` tensor (fp32)."""
    return tl.load(X + edges * H + h, mask=mask_e,
                   other=0.0).to(tl.float32)


@triton.jit
def _csr_scores(q, K, EK, B, j, offs_e, mask_e, kc, scale, h, H, C,
                offs_c, HAS_EK: tl.constexpr, HAS_B: tl.constexpr):
    """Keys ``k_j + ek_e``, ``<q, key>`` and the scores of a block of
    one target row's edges."""
    k = _rows(K, j, EK, offs_e, kc, h, H, C, offs_c, HAS_EK)
    dot = tl.sum(k * q[None, :], 1)
    s = dot * scale
    if HAS_B:
        s += _per_edge(B, offs_e, mask_e, h, H)
    return k, dot, s


@triton.jit
def forward(Q, K, V, EK, EV, B, SCALE, SRC, ROW, START, END, SLOT,
             OUT, LSE, PACC, PM, PL, H, C, CV,
             HAS_EK: tl.constexpr, HAS_EV: tl.constexpr,
             HAS_B: tl.constexpr, BLOCK_E: tl.constexpr,
             BLOCK_C: tl.constexpr, BLOCK_V: tl.constexpr):
    item, h, row, start, end = _program(ROW, START, END)
    slot = tl.load(SLOT + item)
    offs_c, mask_c = _lanes(BLOCK_C, C)
    offs_v, mask_v = _lanes(BLOCK_V, CV)
    scale = tl.load(SCALE).to(tl.float32)
    q = _row(Q, row, h, H, C, offs_c, mask_c)
    lanes = tl.arange(0, BLOCK_E)
    m_i = tl.max(tl.full([BLOCK_E], float("-inf"), tl.float32), 0)
    l_i = tl.sum(tl.zeros([BLOCK_E], tl.float32), 0)
    acc = tl.zeros([BLOCK_V], tl.float32)
    for e0 in range(start, end, BLOCK_E):
        offs_e, mask_e, j, kc = _edge_block(SRC, e0, lanes, end, mask_c)
        _, _, s = _csr_scores(q, K, EK, B, j, offs_e, mask_e, kc, scale,
                              h, H, C, offs_c, HAS_EK, HAS_B)
        s = tl.where(mask_e, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 0))
        shift = tl.where(m_new == float("-inf"), 0.0, m_new)
        correction = tl.exp(m_i - shift)
        p = tl.exp(s - shift)
        vc = mask_e[:, None] & mask_v[None, :]
        v = _rows(V, j, EV, offs_e, vc, h, H, CV, offs_v, HAS_EV)
        l_i = l_i * correction + tl.sum(p, 0)
        acc = acc * correction + tl.sum(p[:, None] * v, 0)
        m_i = m_new
    if slot < 0:
        safe_l = tl.where(l_i > 0, l_i, 1.0)
        out = tl.where(l_i > 0, acc / safe_l, 0.0)
        shift = tl.where(m_i == float("-inf"), 0.0, m_i)
        lse = tl.where(l_i > 0, shift + tl.log(safe_l), float("inf"))
        tl.store(OUT + (row * H + h) * CV + offs_v,
                 out.to(OUT.dtype.element_ty), mask=mask_v)
        tl.store(LSE + row * H + h, lse)
    else:
        slot64 = slot.to(tl.int64)
        tl.store(PACC + (slot64 * H + h) * CV + offs_v, acc,
                 mask=mask_v)
        tl.store(PM + slot64 * H + h, m_i)
        tl.store(PL + slot64 * H + h, l_i)


@triton.jit
def weights(Q, K, EK, B, SCALE, SRC, ROW, START, END, LSE, ALPHA, H, C,
             HAS_EK: tl.constexpr, HAS_B: tl.constexpr,
             BLOCK_E: tl.constexpr, BLOCK_C: tl.constexpr):
    item, h, row, start, end = _program(ROW, START, END)
    offs_c, mask_c = _lanes(BLOCK_C, C)
    scale = tl.load(SCALE).to(tl.float32)
    q = _row(Q, row, h, H, C, offs_c, mask_c)
    lse = tl.load(LSE + row * H + h)
    lanes = tl.arange(0, BLOCK_E)
    for e0 in range(start, end, BLOCK_E):
        offs_e, mask_e, j, kc = _edge_block(SRC, e0, lanes, end, mask_c)
        _, _, s = _csr_scores(q, K, EK, B, j, offs_e, mask_e, kc, scale,
                              h, H, C, offs_c, HAS_EK, HAS_B)
        tl.store(ALPHA + offs_e * H + h, tl.exp(s - lse), mask=mask_e)


@triton.jit
def _store_edge_grads(DEK, DEV, DB, edges, mask_e, kc, vc, dk_e, dv_e,
                      ds, h, H, C, CV, offs_c, offs_v,
                      NEED_DEK: tl.constexpr, NEED_DEV: tl.constexpr,
                      NEED_DB: tl.constexpr):
    """The per-edge gradients a caller needs, at CSR positions."""
    if NEED_DEK:
        tl.store(DEK + (edges[:, None] * H + h) * C + offs_c[None, :],
                 dk_e, mask=kc)
    if NEED_DEV:
        tl.store(DEV + (edges[:, None] * H + h) * CV + offs_v[None, :],
                 dv_e, mask=vc)
    if NEED_DB:
        tl.store(DB + edges * H + h, ds, mask=mask_e)


@triton.jit
def backward(Q, K, V, EK, EV, B, SCALE, SRC, ROW, START, END, LSE,
              DELTA, DOUT, DALPHA, DQ, DK, DV, DEK, DEV, DB, DSCALE,
              H, C, CV,
              HAS_EK: tl.constexpr, HAS_EV: tl.constexpr,
              HAS_B: tl.constexpr, HAS_DALPHA: tl.constexpr,
              NEED_DEK: tl.constexpr, NEED_DEV: tl.constexpr,
              NEED_DB: tl.constexpr, ATOMIC_KV: tl.constexpr,
              BLOCK_E: tl.constexpr, BLOCK_C: tl.constexpr,
              BLOCK_V: tl.constexpr):
    item, h, row, start, end = _program(ROW, START, END)
    offs_c, mask_c = _lanes(BLOCK_C, C)
    offs_v, mask_v = _lanes(BLOCK_V, CV)
    scale = tl.load(SCALE).to(tl.float32)
    q = _row(Q, row, h, H, C, offs_c, mask_c)
    do = _row(DOUT, row, h, H, CV, offs_v, mask_v)
    lse = tl.load(LSE + row * H + h)
    delta = tl.load(DELTA + row * H + h)
    lanes = tl.arange(0, BLOCK_E)
    dq = tl.zeros([BLOCK_C], tl.float32)
    dscale = tl.sum(tl.zeros([BLOCK_E], tl.float32), 0)
    for e0 in range(start, end, BLOCK_E):
        offs_e, mask_e, j, kc = _edge_block(SRC, e0, lanes, end, mask_c)
        vc = mask_e[:, None] & mask_v[None, :]
        k, dot, s = _csr_scores(q, K, EK, B, j, offs_e, mask_e, kc,
                                scale, h, H, C, offs_c, HAS_EK, HAS_B)
        p = tl.where(mask_e, tl.exp(s - lse), 0.0)
        v = _rows(V, j, EV, offs_e, vc, h, H, CV, offs_v, HAS_EV)
        dp = tl.sum(v * do[None, :], 1)
        if HAS_DALPHA:
            dp += _per_edge(DALPHA, offs_e, mask_e, h, H)
        ds = tl.where(p > 0, p * (dp - delta), 0.0)
        dq += tl.sum(ds[:, None] * k, 0)
        dscale += tl.sum(ds * tl.where(mask_e, dot, 0.0), 0)
        if ATOMIC_KV:
            dk_e = (scale * ds)[:, None] * q[None, :]
            dv_e = p[:, None] * do[None, :]
            tl.atomic_add(DK + (j[:, None] * H + h) * C +
                          offs_c[None, :], dk_e, mask=kc)
            tl.atomic_add(DV + (j[:, None] * H + h) * CV +
                          offs_v[None, :], dv_e, mask=vc)
            _store_edge_grads(DEK, DEV, DB, offs_e, mask_e, kc, vc, dk_e,
                              dv_e, ds, h, H, C, CV, offs_c, offs_v,
                              NEED_DEK, NEED_DEV, NEED_DB)
    tl.atomic_add(DQ + (row * H + h) * C + offs_c, dq * scale,
                  mask=mask_c)
    tl.store(DSCALE + item * H + h, dscale)


@triton.jit
def backward_by_source(Q, K, V, EK, EV, B, SCALE, DST, POS, ROW, START,
                        END, LSE, DELTA, DOUT, DALPHA, DK, DV, DEK, DEV,
                        DB, H, C, CV,
                        HAS_EK: tl.constexpr, HAS_EV: tl.constexpr,
                        HAS_B: tl.constexpr, HAS_DALPHA: tl.constexpr,
                        NEED_DEK: tl.constexpr, NEED_DEV: tl.constexpr,
                        NEED_DB: tl.constexpr, BLOCK_E: tl.constexpr,
                        BLOCK_C: tl.constexpr, BLOCK_V: tl.constexpr):
    # One work item of one *source* row: its outgoing edges in CSC
    # order; per-edge inputs and outputs sit at their CSR positions.
    item, h, row, start, end = _program(ROW, START, END)
    offs_c, mask_c = _lanes(BLOCK_C, C)
    offs_v, mask_v = _lanes(BLOCK_V, CV)
    scale = tl.load(SCALE).to(tl.float32)
    k_j = _row(K, row, h, H, C, offs_c, mask_c)
    v_j = _row(V, row, h, H, CV, offs_v, mask_v)
    lanes = tl.arange(0, BLOCK_E)
    dk = tl.zeros([BLOCK_C], tl.float32)
    dv = tl.zeros([BLOCK_V], tl.float32)
    for e0 in range(start, end, BLOCK_E):
        offs, mask_e, i, kc = _edge_block(DST, e0, lanes, end, mask_c)
        pos = tl.load(POS + offs, mask=mask_e, other=0)
        vc = mask_e[:, None] & mask_v[None, :]
        q = _gather(Q, i, kc, h, H, C, offs_c)
        k = k_j[None, :]
        if HAS_EK:
            k = k + _gather(EK, pos, kc, h, H, C, offs_c)
        s = tl.sum(q * k, 1) * scale
        if HAS_B:
            s += _per_edge(B, pos, mask_e, h, H)
        lse = tl.load(LSE + i * H + h, mask=mask_e, other=float("inf"))
        p = tl.where(mask_e, tl.exp(s - lse), 0.0)
        do = _gather(DOUT, i, vc, h, H, CV, offs_v)
        v = v_j[None, :]
        if HAS_EV:
            v = v + _gather(EV, pos, vc, h, H, CV, offs_v)
        dp = tl.sum(do * v, 1)
        if HAS_DALPHA:
            dp += _per_edge(DALPHA, pos, mask_e, h, H)
        delta = tl.load(DELTA + i * H + h, mask=mask_e, other=0.0)
        ds = tl.where(p > 0, p * (dp - delta), 0.0)
        dk_e = (scale * ds)[:, None] * q
        dv_e = p[:, None] * do
        dk += tl.sum(dk_e, 0)
        dv += tl.sum(dv_e, 0)
        _store_edge_grads(DEK, DEV, DB, pos, mask_e, kc, vc, dk_e, dv_e,
                          ds, h, H, C, CV, offs_c, offs_v, NEED_DEK,
                          NEED_DEV, NEED_DB)
    # a split source row has several items: one add per item and
    # channel (not per edge)
    tl.atomic_add(DK + (row * H + h) * C + offs_c, dk, mask=mask_c)
    tl.atomic_add(DV + (row * H + h) * CV + offs_v, dv, mask=mask_v)


# --------------------------------------------------------------------------
# attention-weighted aggregation (triton_aggregate.py)
# --------------------------------------------------------------------------

@triton.jit
def _first_extreme(v, keep, offs_e, NUM_EDGES, IS_MAX: tl.constexpr):
    """The block's max (or min) of ``v`` over the kept lanes, per channel,
    and the first edge reaching it (``NUM_EDGES`` where nothing is kept)."""
    skip = float("-inf") if IS_MAX else float("inf")
    masked = tl.where(keep, v, skip)
    if IS_MAX:
        best = tl.max(masked, 0)
    else:
        best = tl.min(masked, 0)
    hit = keep & (masked == best[None, :])
    first = tl.min(tl.where(hit, offs_e[:, None], NUM_EDGES), 0)
    return best, first


@triton.jit
def aggregate_forward(V, W, SRC, ROW, START, END, SUM, SQ, TOTAL, MAX, MIN,
                      ARGMAX, ARGMIN, NUM_EDGES, H, C,
                      NEED_SUM: tl.constexpr, NEED_SQ: tl.constexpr,
                      NEED_EXT: tl.constexpr, BLOCK_E: tl.constexpr,
                      BLOCK_C: tl.constexpr):
    # One target row and head: every statistic of the reductions in one
    # pass over the row's edges (sum of w v, of w v^2, of w; max and min of
    # v over edges with w > 0, with their first winning edge).
    item, h, row, start, end = _program(ROW, START, END)
    offs_c, mask_c = _lanes(BLOCK_C, C)
    lanes = tl.arange(0, BLOCK_E)
    acc = tl.zeros([BLOCK_C], tl.float32)
    sq = tl.zeros([BLOCK_C], tl.float32)
    total = tl.sum(tl.zeros([BLOCK_E], tl.float32), 0)
    hi = tl.full([BLOCK_C], float("-inf"), tl.float32)
    lo = tl.full([BLOCK_C], float("inf"), tl.float32)
    # (zeros + a runtime value: tl.full wants a compile-time one)
    arg_hi = tl.zeros([BLOCK_C], tl.int64) + NUM_EDGES
    arg_lo = tl.zeros([BLOCK_C], tl.int64) + NUM_EDGES
    for e0 in range(start, end, BLOCK_E):
        offs_e, mask_e, j, vc = _edge_block(SRC, e0, lanes, end, mask_c)
        w = _per_edge(W, offs_e, mask_e, h, H)
        v = _gather(V, j, vc, h, H, C, offs_c)
        if NEED_SUM:
            acc += tl.sum(w[:, None] * v, 0)
            total += tl.sum(w, 0)
        if NEED_SQ:
            sq += tl.sum(w[:, None] * v * v, 0)
        if NEED_EXT:
            keep = vc & (w > 0)[:, None]
            edges = offs_e.to(tl.int64)
            block_hi, first_hi = _first_extreme(v, keep, edges, NUM_EDGES,
                                                True)
            block_lo, first_lo = _first_extreme(v, keep, edges, NUM_EDGES,
                                                False)
            # strictly better only: an earlier block keeps a tie
            arg_hi = tl.where(block_hi > hi, first_hi, arg_hi)
            hi = tl.maximum(hi, block_hi)
            arg_lo = tl.where(block_lo < lo, first_lo, arg_lo)
            lo = tl.minimum(lo, block_lo)
    at = (row * H + h) * C + offs_c
    if NEED_SUM:
        tl.store(SUM + at, acc, mask=mask_c)
        tl.store(TOTAL + row * H + h, total)
    if NEED_SQ:
        tl.store(SQ + at, sq, mask=mask_c)
    if NEED_EXT:
        tl.store(MAX + at, tl.where(arg_hi < NUM_EDGES, hi, 0.0),
                 mask=mask_c)
        tl.store(MIN + at, tl.where(arg_lo < NUM_EDGES, lo, 0.0),
                 mask=mask_c)
        tl.store(ARGMAX + at, arg_hi, mask=mask_c)
        tl.store(ARGMIN + at, arg_lo, mask=mask_c)


@triton.jit
def aggregate_backward_by_source(V, W, DST, POS, ROW, START, END, GSUM, GSQ,
                                 GTOTAL, GMAX, GMIN, ARGMAX, ARGMIN, DV, DW,
                                 H, C, HAS_GSUM: tl.constexpr,
                                 HAS_GSQ: tl.constexpr,
                                 HAS_GTOTAL: tl.constexpr,
                                 HAS_GMAX: tl.constexpr,
                                 HAS_GMIN: tl.constexpr,
                                 NEED_DW: tl.constexpr,
                                 BLOCK_E: tl.constexpr,
                                 BLOCK_C: tl.constexpr):
    # One work item of one source row j: its outgoing edges in CSC order
    # (weights and winners are at CSR positions).  dv_j sums over them
    # with no per-edge atomics; each edge's weight gradient is written
    # once.
    item, h, row, start, end = _program(ROW, START, END)
    offs_c, mask_c = _lanes(BLOCK_C, C)
    v_j = _row(V, row, h, H, C, offs_c, mask_c)
    lanes = tl.arange(0, BLOCK_E)
    dv = tl.zeros([BLOCK_C], tl.float32)
    for e0 in range(start, end, BLOCK_E):
        offs, mask_e, i, vc = _edge_block(DST, e0, lanes, end, mask_c)
        pos = tl.load(POS + offs, mask=mask_e, other=0)
        w = _per_edge(W, pos, mask_e, h, H)
        dw = tl.zeros([BLOCK_E], tl.float32)
        if HAS_GSUM:
            g = _gather(GSUM, i, vc, h, H, C, offs_c)
            dv += tl.sum(w[:, None] * g, 0)
            dw += tl.sum(g * v_j[None, :], 1)
        if HAS_GSQ:
            g = _gather(GSQ, i, vc, h, H, C, offs_c)
            dv += tl.sum(2.0 * w[:, None] * v_j[None, :] * g, 0)
            dw += tl.sum(g * (v_j * v_j)[None, :], 1)
        if HAS_GTOTAL:
            dw += _per_edge(GTOTAL, i, mask_e, h, H)
        won = (pos.to(tl.int64))[:, None]
        at = (i[:, None] * H + h) * C + offs_c[None, :]
        if HAS_GMAX:
            winner = tl.load(ARGMAX + at, mask=vc, other=-1)
            g = _gather(GMAX, i, vc, h, H, C, offs_c)
            dv += tl.sum(tl.where(winner == won, g, 0.0), 0)
        if HAS_GMIN:
            winner = tl.load(ARGMIN + at, mask=vc, other=-1)
            g = _gather(GMIN, i, vc, h, H, C, offs_c)
            dv += tl.sum(tl.where(winner == won, g, 0.0), 0)
        if NEED_DW:
            tl.store(DW + pos * H + h, dw, mask=mask_e)
    # a split source row has several items: one add per item and channel
    tl.atomic_add(DV + (row * H + h) * C + offs_c, dv, mask=mask_c)
