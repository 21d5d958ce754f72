"""The order in which MLUpdateTask visits the training examples, epoch by epoch.

Core ML's shuffling batch provider (decompiled iOS Core ML, ``MLShufflingBatchProvider``,
evidence ids 14763505511 and 16801534799 in ``COREML_EVIDENCE.md``) keeps an index vector
``0..n-1``. It shuffles it once when the task starts and again, in place, at the end of every
epoch (the previous permutation, the same engine), with libc++'s ``std::shuffle`` driven by
``std::minstd_rand``. The engine is in state 1 when the model has no ``seed``; otherwise it is
seeded through ``std::seed_seq{seed}`` (the seed's low 32 bits: the provider reads it as an
``unsigned int``). With shuffling off the order is ``0..n-1`` in every epoch.

This module reproduces that arithmetic in Python, bit for bit: the engine, ``seed_seq``,
libc++'s ``uniform_int_distribution`` (with its ``__independent_bits_engine``) and its Fisher-
Yates loop. The algorithms follow the public libc++ headers (``__random/*.h``,
``__algorithm/shuffle.h``); ``tests/golden/libcxx_shuffle.json`` holds permutations printed by
a C++ program compiled against libc++ (``tools/shuffle_golden/``), which the tests compare to.

``"numpy"`` keeps the order this project used before: one ``numpy.random.default_rng(seed)``
per task and a fresh ``permutation(n)`` per epoch (a named alternative, not Core ML's).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

MINSTD_MULTIPLIER = 48271
MINSTD_MODULUS = 2147483647  # 2**31 - 1
MINSTD_MIN, MINSTD_MAX = 1, MINSTD_MODULUS - 1
_MASK32 = 0xFFFFFFFF
_MASK64 = 0xFFFFFFFFFFFFFFFF
#: bits one engine call yields for sure: floor(log2(MINSTD_MAX - MINSTD_MIN + 1))
_ENGINE_RANGE = MINSTD_MAX - MINSTD_MIN + 1
_ENGINE_BITS = _ENGINE_RANGE.bit_length() - 1


class MinstdRand:
    """``std::minstd_rand``: x <- 48271 * x mod (2**31 - 1); outputs lie in 1..2**31-2."""

    def __init__(self, state: int = 1) -> None:
        self.state = state

    @classmethod
    def from_seed_seq(cls, seed: int) -> MinstdRand:
        """The engine after ``seed(std::seed_seq{seed})``: libc++ asks the sequence for 4 words
        (k = 1 word for a modulus below 2**32, plus 3) and takes the last modulo m; 0 becomes 1."""
        words = seed_seq_generate([seed & _MASK32], 4)
        state = words[3] % MINSTD_MODULUS
        return cls(state or 1)

    def __call__(self) -> int:
        self.state = (MINSTD_MULTIPLIER * self.state) % MINSTD_MODULUS
        return self.state


def _tempering(value: int) -> int:
    return (value ^ (value >> 27)) & _MASK32


def seed_seq_generate(seeds: list[int], count: int) -> list[int]:
    """``std::seed_seq(seeds).generate`` of ``count`` 32-bit words (the standard's algorithm,
    in libc++'s loop order)."""
    if count == 0:
        return []
    out = [0x8B8B8B8B] * count
    size = len(seeds)
    t = (
        11
        if count >= 623
        else 7
        if count >= 68
        else 5
        if count >= 39
        else 3
        if count >= 7
        else (count - 1) // 2
    )
    p = (count - t) // 2
    q = p + t
    m = max(size + 1, count)
    for k in range(m + count):
        i, ip, iq, i1 = k % count, (k + p) % count, (k + q) % count, (k - 1) % count
        if k < m:
            r = (1664525 * _tempering(out[i] ^ out[ip] ^ out[i1])) & _MASK32
            out[ip] = (out[ip] + r) & _MASK32
            if k == 0:
                r = (r + size) & _MASK32
            elif k <= size:
                r = (r + i + seeds[k - 1]) & _MASK32
            else:
                r = (r + i) & _MASK32
            out[iq] = (out[iq] + r) & _MASK32
            out[i] = r
        else:
            r = (1566083941 * _tempering((out[i] + out[ip] + out[i1]) & _MASK32)) & _MASK32
            out[ip] ^= r
            r = (r - i) & _MASK32
            out[iq] ^= r
            out[i] = r
    return out


class IndependentBits:
    """libc++'s ``__independent_bits_engine<minstd_rand, uint64_t>``: ``bits`` random bits
    assembled from engine calls, each call's value (minus the engine's minimum) rejected when it
    falls in the top, incomplete block of the engine's range."""

    def __init__(self, engine: MinstdRand, bits: int) -> None:
        self.engine, self.bits = engine, bits
        rng_range, per_call = _ENGINE_RANGE, _ENGINE_BITS
        if bits <= per_call:
            calls, low_calls, width = 1, 1, bits
            mask = (1 << width) - 1
            self.limit0 = self.limit1 = rng_range & ~mask
            self.mask0 = self.mask1 = mask
        else:
            calls = (bits + per_call - 1) // per_call
            width = bits // calls
            mask = (1 << width) - 1
            limit = rng_range & ~mask
            if rng_range - limit > limit // calls:  # too many rejections: one call more
                calls += 1
                width = bits // calls
                mask = (1 << width) - 1
                limit = rng_range & ~mask
            self.limit0 = self.limit1 = limit
            self.mask0 = self.mask1 = mask
            wide = bits % calls
            low_calls = calls - wide
            if wide:
                self.mask1 = (1 << (width + 1)) - 1
                self.limit1 = rng_range & ~self.mask1
        self.calls, self.low_calls, self.width = calls, low_calls, width

    def _draw(self, limit: int) -> int:
        while True:
            value = self.engine() - MINSTD_MIN
            if value < limit:
                return value

    def __call__(self) -> int:
        result = 0
        for k in range(self.calls):
            if k < self.low_calls:
                result = ((result << self.width) + (self._draw(self.limit0) & self.mask0)) & _MASK64
            else:
                result = (
                    (result << (self.width + 1)) + (self._draw(self.limit1) & self.mask1)
                ) & _MASK64
        return result


def uniform_int(engine: MinstdRand, low: int, high: int) -> int:
    """``std::uniform_int_distribution<ptrdiff_t>(low, high)(engine)`` as libc++ computes it
    (64-bit unsigned arithmetic, as for ``ptrdiff_t`` on a 64-bit platform)."""
    span = (high - low + 1) & _MASK64
    if span == 1:
        return low
    if span == 0:  # the whole 64-bit range: libc++ returns the raw bits (low is the minimum)
        return _signed64(IndependentBits(engine, 64)())
    bits = span.bit_length()
    if span & (span - 1) == 0:
        return _signed64(IndependentBits(engine, bits - 1)() + low)
    draw = IndependentBits(engine, bits)
    while True:
        value = draw()
        if value < span:
            return _signed64(value + low)


def _signed64(value: int) -> int:
    value &= _MASK64
    return value - (1 << 64) if value >> 63 else value


def libcxx_shuffle(values: list, engine: MinstdRand) -> None:
    """``std::shuffle(values.begin(), values.end(), engine)`` in place, libc++'s loop: for each
    position i from the front, swap with i + uniform(0, n - 1 - i) unless that draw is 0.

    Spans up to 2**30 (every realistic dataset) take one engine call per attempt; that case is
    ``uniform_int`` unrolled here, because the loop runs once per example and epoch."""
    last = len(values) - 1
    state = engine.state
    for i in range(last):
        span = last - i + 1
        bits = span.bit_length()
        if span & (span - 1) == 0:
            bits -= 1
        if bits > _ENGINE_BITS:
            engine.state = state
            j = uniform_int(engine, 0, span - 1)
            state = engine.state
        else:
            mask = (1 << bits) - 1
            limit = _ENGINE_RANGE & ~mask
            while True:
                state = (MINSTD_MULTIPLIER * state) % MINSTD_MODULUS
                value = state - MINSTD_MIN
                if value < limit:
                    j = value & mask
                    if j < span:
                        break
        if j:
            values[i], values[i + j] = values[i + j], values[i]
    engine.state = state


def coreml_orders(count: int, epochs: int, shuffle: bool, seed: int | None) -> Iterator[np.ndarray]:
    """Core ML's example order for each epoch (see the module docstring)."""
    if not shuffle:
        for _ in range(epochs):
            yield np.arange(count)
        return
    engine = MinstdRand() if seed is None else MinstdRand.from_seed_seq(seed)
    indices = list(range(count))
    libcxx_shuffle(indices, engine)  # when the task starts
    for _ in range(epochs):
        yield np.asarray(indices, dtype=np.int64)
        libcxx_shuffle(indices, engine)  # at each epoch end


def numpy_orders(
    count: int, epochs: int, shuffle: bool, seed: int | None, fallback_seed: int = 0
) -> Iterator[np.ndarray]:
    """The ``"numpy"`` alternative: ``default_rng(seed).permutation(count)`` per epoch."""
    rng = np.random.default_rng(fallback_seed if seed is None else seed)
    for _ in range(epochs):
        yield rng.permutation(count) if shuffle else np.arange(count)
