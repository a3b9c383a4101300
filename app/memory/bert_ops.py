"""Numerical kernels of the numpy BERT encoder (`app.memory.minilm`): exact-erf GELU, layer norm, attention,
and the BLAS thread count. Plain arrays in, arrays out; no model state."""

from __future__ import annotations

import ctypes
import math
import os

import numpy as np

F32 = np.float32

# GELU(x) = x * Phi(x) = x * (0.5 + 0.5 * erf(x / sqrt(2))), with erf from a rational
# minimax approximation on [-4, 4] (erf(4) == 1 in float32): erf(t) ~= t * P(t^2) / Q(t^2).
# These are the coefficients of Eigen's / XLA's float32 erf. Measured max abs error of erf
# vs math.erf over [-8, 8]: 6.5e-8 evaluated in float64, 4.4e-7 evaluated in float32 (a few
# float32 ulps); GELU max abs error over [-10, 10] in float32: 1.3e-6 (= 1 ulp at |x| ~ 10).
# That is far below the float32 noise of the matmuls around it, and it needs no exp().
_ERF_P = (
    -2.72614225801306e-10,
    2.77068142495902e-08,
    -2.10102402082508e-06,
    -5.69250639462346e-05,
    -7.34990630326855e-04,
    -2.95459980854025e-03,
    -1.60960333262415e-02,
)
_ERF_Q = (
    -1.45660718464996e-05,
    -2.13374055278905e-04,
    -1.68282697438203e-03,
    -7.37332916720468e-03,
    -1.42647390514189e-02,
)
_ERF_P32 = tuple(F32(c) for c in _ERF_P)
_ERF_Q32 = tuple(F32(c) for c in _ERF_Q)
# For GELU, fold t = u / sqrt(2) (so t^2 = z / 2 with z = u^2) and the outer 0.5 into the
# coefficients:  0.5 * erf(u / sqrt2) = u * P'(z) / Q'(z).
_GELU_P = tuple(
    F32(c * 0.5 ** (len(_ERF_P) - 1 - i) * 0.5 / math.sqrt(2.0)) for i, c in enumerate(_ERF_P)
)
_GELU_Q = tuple(F32(c * 0.5 ** (len(_ERF_Q) - 1 - i)) for i, c in enumerate(_ERF_Q))
_GELU_CLIP = F32(4.0 * math.sqrt(2.0))
_HALF = F32(0.5)
# Elementwise work on (rows, 1536) activations is done in row blocks so temporaries stay in
# L2 cache; unblocked it costs several times more for large batches.
_GELU_BLOCK_ROWS = 64


def _ratpoly(z: np.ndarray, coefs: tuple[np.float32, ...]) -> np.ndarray:
    """Horner evaluation of sum(coefs[i] * z**(n-i)) into a new array."""
    r = z * coefs[0]
    r += coefs[1]
    for c in coefs[2:]:
        r *= z
        r += c
    return r


def erf(x: np.ndarray) -> np.ndarray:
    """Vectorised erf (returns a new array of x's float dtype; float32 or float64)."""
    x = np.clip(np.asarray(x), -4.0, 4.0)
    x2 = np.square(x)
    if x.dtype == np.float32:
        p, q = _ratpoly(x2, _ERF_P32), _ratpoly(x2, _ERF_Q32)
    else:
        p, q = _ratpoly(x2, _ERF_P), _ratpoly(x2, _ERF_Q)
    p *= x
    p /= q
    return p


def _gelu_block(x: np.ndarray) -> None:
    u = np.clip(x, -_GELU_CLIP, _GELU_CLIP)
    z = np.square(u)
    p = _ratpoly(z, _GELU_P)
    p *= u
    p /= _ratpoly(z, _GELU_Q)
    p += _HALF
    x *= p


def gelu(x: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """Exact (erf) GELU of ``x + bias``, in place on the float32 2-D array ``x`` (returned)."""
    n = x.shape[0]
    for i in range(0, n, _GELU_BLOCK_ROWS):
        blk = x[i : i + _GELU_BLOCK_ROWS]
        if bias is not None:
            blk += bias
        _gelu_block(blk)
    return x


def layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: np.float32) -> np.ndarray:
    """LayerNorm over the last axis; overwrites and returns ``x`` (float32, 2-D)."""
    inv_h = F32(1.0 / x.shape[1])
    mean = np.add.reduce(x, axis=1, keepdims=True)
    mean *= inv_h
    x -= mean
    var = np.add.reduce(np.square(x), axis=1, keepdims=True)
    var *= inv_h
    var += eps
    np.sqrt(var, out=var)
    x /= var
    x *= w
    x += b
    return x


_LN_BLOCK_ROWS = 128


def add_layer_norm(
    y: np.ndarray, bias: np.ndarray, residual: np.ndarray, w: np.ndarray, b: np.ndarray, eps: np.float32
) -> np.ndarray:
    """``LayerNorm(y + bias + residual)`` in place on ``y``, in cache-sized row blocks."""
    n = y.shape[0]
    for i in range(0, n, _LN_BLOCK_ROWS):
        blk = y[i : i + _LN_BLOCK_ROWS]
        blk += bias
        blk += residual[i : i + _LN_BLOCK_ROWS]
        layer_norm(blk, w, b, eps)
    return y


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """softmax(q @ k + bias) @ v over the last axis, for (B, nh, T, hd) q/v and (B, nh, hd, T) k.

    Softmax is shift-invariant, so instead of a per-row max (a slow reduction over a short
    axis) one global max is subtracted, and the normalisation is applied to the (T, hd)
    result instead of the (T, T) probabilities. If some row's values are so far below the
    global max that its exponentials underflow, that case is redone with per-row maxima.
    """
    s = np.matmul(q, k)  # (B, nh, T, T); the 1/sqrt(hd) scale is folded into W_q
    if bias is not None:
        s += bias
    s -= s.max()
    np.exp(s, out=s)
    denom = np.add.reduce(s, axis=-1, keepdims=True)
    if not denom.min() > F32(1e-30):  # some row underflowed (or NaN): per-row maxima
        s = np.matmul(q, k)
        if bias is not None:
            s += bias
        s -= s.max(axis=-1, keepdims=True)
        np.exp(s, out=s)
        denom = np.add.reduce(s, axis=-1, keepdims=True)
    ctx = np.matmul(s, v)
    ctx /= denom
    return ctx


# ---------------------------------------------------------------------------- BLAS threads
_SET_THREADS = ("openblas_set_num_threads", "openblas_set_num_threads64_", "scipy_openblas_set_num_threads64_",
                "scipy_openblas_set_num_threads")
_GET_THREADS = ("openblas_get_num_threads", "openblas_get_num_threads64_", "scipy_openblas_get_num_threads64_",
                "scipy_openblas_get_num_threads")


def _loaded_openblas() -> list[ctypes.CDLL]:
    """Handles of the OpenBLAS libraries already mapped into this process (Linux only)."""
    import numpy.linalg  # noqa: F401  (make sure numpy's BLAS is loaded)

    paths: list[str] = []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split(maxsplit=5)
                if len(parts) == 6:
                    path = parts[5].strip()
                    if "openblas" in os.path.basename(path).lower() and path not in paths:
                        paths.append(path)
    except OSError:
        return []
    libs = []
    for path in paths:
        try:
            libs.append(ctypes.CDLL(path, mode=getattr(os, "RTLD_NOLOAD", 0)))
        except OSError:
            pass
    return libs


def _blas_fn(lib: ctypes.CDLL, names: tuple[str, ...]):
    for name in names:
        fn = getattr(lib, name, None)
        if fn is not None:
            return fn
    return None


def get_blas_threads() -> int | None:
    """Thread count of numpy's OpenBLAS, or None if it cannot be found."""
    for lib in _loaded_openblas():
        fn = _blas_fn(lib, _GET_THREADS)
        if fn is not None:
            fn.restype = ctypes.c_int
            return int(fn())
    return None


def set_blas_threads(n: int) -> int | None:
    """Set the thread count of every OpenBLAS loaded in this process (numpy's included).

    This is process-wide. Returns the previous count, or None if no OpenBLAS was found
    (e.g. numpy built against another BLAS), in which case nothing changes.
    """
    previous = None
    for lib in _loaded_openblas():
        get, set_ = _blas_fn(lib, _GET_THREADS), _blas_fn(lib, _SET_THREADS)
        if set_ is None:
            continue
        if get is not None and previous is None:
            get.restype = ctypes.c_int
            previous = int(get())
        set_.argtypes = [ctypes.c_int]
        set_.restype = None
        set_(int(n))
    return previous


def limit_blas_threads(n: int = 1) -> int | None:
    """Set numpy's OpenBLAS to ``n`` threads unless the operator chose (``OPENBLAS_NUM_THREADS`` or
    ``OMP_NUM_THREADS`` set); returns the previous count, or None when nothing changed.

    A server process wants 1: OpenBLAS's idle threads spin after each call, and the small products a request
    makes (the vector cache's cosine top-k) gain nothing from a second thread while the event loop needs the
    core. Measured in the server with 10 000 memories in the namespace: 25 -> 11 ms of the server process's
    CPU per request, 19 -> 16 ms per request (docs/benchmarks.md, "Proxy overhead: the BLAS threads")."""
    if any(os.environ.get(v) for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")):
        return None
    return set_blas_threads(n)
