"""Canned engines: many simulated carriers answering from a few real datasets, cheaply.

A simulated federation of a thousand carriers cannot run a thousand DuckDB engines on two
cores, and needs not: what it tests is the federation (dispatch, gate, disclosure control,
signing, persistence, collection, combination), not the engine, which has tests of its own.
So carriers may share a dataset, and each dataset has one :class:`CannedAnswers`: a real
:class:`~carrier_node.data.files.FileSource` (validated once) and a real
:class:`~carrier_node.query.engine.Engine` that evaluates each distinct request once, keeping
its Arrow results. Every node of a carrier on that dataset gets a :class:`CannedEngine`: the
node's own engine in every respect (local queries, carrier filters, decoding into raw cells
under the node's carrier id) except that a batch's SQL results come from the cache.

Record keys in the cached results are keyed with the dataset engine's secret, not each node's
(they only ever feed the node's own disclosure control, which keys its noise with the node's
secret all the same). The data snapshot each result names is the dataset's real one.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa

from carrier_node.budget import Budget
from carrier_node.data.files import FileSource
from carrier_node.query.engine import BatchTiming, Engine
from fedoversight.domain import QuerySpec
from fedoversight.periods import Period

_Key = tuple[Period, tuple[QuerySpec, ...]]


class CannedAnswers:
    """One dataset's real engine, each distinct batch evaluated once (thread-safe)."""

    def __init__(self, directory: Path, *, threads: int = 1) -> None:
        self.directory = Path(directory)
        self.source = FileSource(self.directory, threads=threads)
        self._secret = secrets.token_hex(16)
        self._engines: dict[bool, Engine] = {}
        self._cache: dict[tuple[bool, _Key], list[tuple[pa.Table, float]]] = {}
        #: The real evaluation of each distinct batch: wall seconds of the whole batch
        #: (rendering, shared blocks, every query's SQL) and the engine's own timing.
        self.computed: dict[_Key, tuple[float, BatchTiming]] = {}
        self._lock = threading.Lock()
        self._opened = False

    def open(self) -> None:
        """Open and validate the dataset (once; later calls return at once)."""
        with self._lock:
            if not self._opened:
                self.source.open()
                self._opened = True

    def run(
        self, period: Period, queries: tuple[QuerySpec, ...], clamped: bool
    ) -> list[tuple[pa.Table, float]]:
        """What :meth:`Engine._run` returns for the batch, evaluated for real the first time."""
        key = (period, queries)
        cached = self._cache.get((clamped, key))
        if cached is not None:
            return cached
        with self._lock:
            cached = self._cache.get((clamped, key))
            if cached is None:
                engine = self._engines.get(clamped)
                if engine is None:
                    engine = self._engines[clamped] = Engine(
                        self.source, "canned", record_secret=self._secret, clamped=clamped
                    )
                started = time.perf_counter()
                cached = engine._run(period, queries, Budget.unlimited())
                self.computed[key] = (time.perf_counter() - started, engine.last_batch)
                self._cache[(clamped, key)] = cached
        return cached


class CannedEngine(Engine):
    """A node's engine whose batches' SQL results come from its dataset's
    :class:`CannedAnswers` (decoding, carrier filters and all the rest are the node's own)."""

    def __init__(
        self,
        answers: CannedAnswers,
        carrier_id: str,
        *,
        record_secret: str | None = None,
        clamped: bool = False,
    ) -> None:
        super().__init__(answers.source, carrier_id, record_secret=record_secret, clamped=clamped)
        self.answers = answers

    def _run(
        self, period: Period, queries: tuple[QuerySpec, ...], budget: Budget
    ) -> list[tuple[pa.Table, float]]:
        budget.check("the engine")
        started = time.perf_counter()
        out = self.answers.run(period, queries, self.keying.clamped)
        self.last_batch = BatchTiming(query_seconds=(time.perf_counter() - started,) * len(out))
        return out


def canned_answers(
    carrier_dirs: Mapping[str, Path], *, threads: int = 1
) -> dict[Path, CannedAnswers]:
    """One :class:`CannedAnswers` per distinct data directory (not opened yet)."""
    return {d: CannedAnswers(d, threads=threads) for d in sorted(set(carrier_dirs.values()))}


def spread(datasets: Mapping[str, Path] | list[Path], carriers: int) -> dict[str, Path]:
    """``carriers`` carrier ids (``c0001``, ``c0002``, ...) on the given datasets in turn: a
    large federation from a handful of synthetic carriers' data."""
    dirs = sorted(datasets.values()) if isinstance(datasets, Mapping) else list(datasets)
    if not dirs:
        raise ValueError("no datasets to spread carriers over")
    width = max(4, len(str(carriers)))
    return {f"c{i:0{width}d}": dirs[(i - 1) % len(dirs)] for i in range(1, carriers + 1)}
