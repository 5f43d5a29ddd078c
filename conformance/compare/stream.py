"""Comparing large tensors at disk speed: reading, checksumming and comparing overlap (numpy only).

A tensor pair too large to hold twice is compared chunk by chunk. A reader thread fetches the next
chunks of the golden (verifying its CRC-32 as it goes) and of the candidate while the main thread folds
the current ones into the metrics; HDF5 reads, zlib and numpy all release the GIL, so on two cores the
three overlap and the pass runs at the speed of its slowest part instead of their sum.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import cast

import numpy as np

from ..metrics import CHUNK_ELEMENTS, MetricAccumulator, Metrics

Chunks = Iterator[np.ndarray]


def _pairs(
    golden: Chunks, candidate: np.ndarray | Callable[[int, int], np.ndarray]
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    offset = 0
    for chunk in golden:
        n = chunk.size
        if callable(candidate):
            other = candidate(offset, n)
        else:
            other = candidate[offset : offset + n]
        offset += n
        yield chunk, other


def streamed_metrics(
    golden: Chunks,
    candidate: np.ndarray | Callable[[int, int], np.ndarray],
    accumulator: MetricAccumulator,
    *,
    depth: int = 2,
) -> Metrics:
    """Fold (golden chunk, candidate chunk) pairs into `accumulator` with reading in a second thread.

    `golden` yields flat chunks (and raises on a checksum mismatch, in the reader thread: the error is
    re-raised here). `candidate` is a flat array (memory or memmap) or a function (offset, n) -> chunk.
    """
    slots: queue.Queue[object] = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for pair in _pairs(golden, candidate):
                while not stop.is_set():
                    try:
                        slots.put(pair, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            slots.put(done)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            slots.put(exc)

    reader = threading.Thread(target=produce, name="conformance-reader", daemon=True)
    reader.start()
    try:
        while True:
            item = slots.get()
            if item is done:
                break
            if isinstance(item, BaseException):
                raise item
            g, c = cast(tuple[np.ndarray, np.ndarray], item)
            for start in range(0, g.size, CHUNK_ELEMENTS):
                accumulator.update(g[start : start + CHUNK_ELEMENTS], c[start : start + CHUNK_ELEMENTS])
    finally:
        stop.set()
        reader.join(timeout=5)
    return accumulator.result()
