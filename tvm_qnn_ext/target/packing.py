"""Weight packing for the dot-product instructions: ``lanes x reduction`` tiles, contiguous."""

from __future__ import annotations

import numpy as np


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def pack_weights(w: np.ndarray, lanes: int, reduction: int) -> np.ndarray:
    """``w[O, ..., C]`` -> ``[O'/lanes, ..., C'/reduction, lanes, reduction]`` (zero padded).

    O' and C' are O and C rounded up to ``lanes`` and ``reduction``; the middle axes (e.g. kernel
    height and width) keep their order.  The padding is zero, so padded input channels add
    nothing and padded output channels are computed and dropped.
    """
    o, c = w.shape[0], w.shape[-1]
    op, cp = round_up(o, lanes), round_up(c, reduction)
    pad = [(0, op - o)] + [(0, 0)] * (w.ndim - 2) + [(0, cp - c)]
    wp = np.pad(w, pad)
    mid = w.shape[1:-1]
    wp = wp.reshape((op // lanes, lanes, *mid, cp // reduction, reduction))
    order = [0, *range(2, 2 + len(mid)), 2 + len(mid), 1, 3 + len(mid)]
    return np.ascontiguousarray(wp.transpose(order))
