"""Carrier directories: :func:`write_carriers` writes every carrier as Parquet or CSV, one file
per table, on a background thread; :func:`read_carrier` reads a directory back into frames."""

from __future__ import annotations

import csv
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from fedoversight.schema import TABLES
from oversight_sim.synth.carriers import _sizes_rng, carrier_ids, carrier_rng, carrier_sizes
from oversight_sim.synth.columns import _frame, _plain, _schema_table, arrow_schema
from oversight_sim.synth.config import SynthConfig
from oversight_sim.synth.generate import _carrier_tables

logger = logging.getLogger(__name__)


def write_carriers(
    out: Path, config: SynthConfig, progress: Callable[[int, int], None] | None = None
) -> list[Path]:
    """Write every carrier to ``out/<carrier id>/<table>.<format>``; return the directories.

    Carriers are made one at a time (large ones block by block) while a background thread
    writes the previous parts, so memory does not grow with the number of members.
    ``progress(done, total)`` is called after each carrier. Parquet files are snappy-compressed
    with plain logical types (no Arrow schema blob, no timestamps); CSV files are written with
    pandas: ISO dates, two-decimal amounts, ``true``/``false``, an empty field for null.
    """
    ids = carrier_ids(config.carriers)
    sizes = carrier_sizes(config.members, config.carriers, _sizes_rng(config))
    directories: list[Path] = []
    with _Writer() as writer:
        for index, (carrier_id, size) in enumerate(zip(ids, sizes, strict=True), start=1):
            directory = out / carrier_id
            directory.mkdir(parents=True, exist_ok=True)
            for table in TABLES:  # no stale tables of the other format
                for suffix in (".parquet", ".csv"):
                    (directory / f"{table.name}{suffix}").unlink(missing_ok=True)
            files: _ParquetTables | _CsvTables = (
                _ParquetTables(directory)
                if config.file_format == "parquet"
                else _CsvTables(directory)
            )
            for name, table in _carrier_tables(
                carrier_id, int(size), config, carrier_rng(config, index)
            ):
                writer.submit(files.write, name, table)
            writer.submit(files.close)
            directories.append(directory)
            if progress is not None:
                writer.wait()
                progress(index, len(ids))
    logger.info("wrote %d synthetic carriers, %d members", len(ids), config.members)
    return directories


class _Writer:
    """Runs file writes in order on one background thread, a few parts behind at most."""

    def __init__(self, backlog: int = 4) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="synth-writer")
        self._pending: deque[Future[None]] = deque()
        self._backlog = backlog

    def submit(self, fn: Callable[..., None], *args: object) -> None:
        while len(self._pending) >= self._backlog:
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(fn, *args))

    def wait(self) -> None:
        while self._pending:
            self._pending.popleft().result()

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                self.wait()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)


class _ParquetTables:
    """Appends parts of each table to ``NAME.parquet`` (deterministic bytes)."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._writers: dict[str, pq.ParquetWriter] = {}

    def write(self, name: str, table: pa.Table) -> None:
        table = _plain(table, _schema_table(name))
        writer = self._writers.get(name)
        if writer is None:
            writer = pq.ParquetWriter(
                self._directory / f"{name}.parquet",
                table.schema,
                compression="snappy",
                write_statistics=True,
                store_schema=False,
            )
            self._writers[name] = writer
        writer.write_table(table)

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()


class _CsvTables:
    """Appends parts of each table to ``NAME.csv``: ISO dates, money with two decimals,
    booleans ``true``/``false``, an empty field for null."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._started: set[str] = set()

    def write(self, name: str, table: pa.Table) -> None:
        text = pa.table(
            {
                column: pc.fill_null(table.column(column).cast(pa.string()), "")
                for column in table.column_names
            }
        )
        frame = text.to_pandas()
        path = self._directory / f"{name}.csv"
        first = name not in self._started
        frame.to_csv(
            path,
            mode="w" if first else "a",
            header=first,
            index=False,
            lineterminator="\n",
            quoting=csv.QUOTE_MINIMAL,
        )
        self._started.add(name)

    def close(self) -> None:
        self._started.clear()


def read_carrier(directory: Path) -> dict[str, pd.DataFrame]:
    """Read a carrier directory written by :func:`write_carriers` back into typed frames."""
    tables: dict[str, pd.DataFrame] = {}
    for table in TABLES:
        schema = arrow_schema(table)
        parquet, text = directory / f"{table.name}.parquet", directory / f"{table.name}.csv"
        if parquet.exists():
            data = pq.read_table(parquet, schema=schema)
        elif text.exists():
            data = pacsv.read_csv(
                text,
                convert_options=pacsv.ConvertOptions(
                    column_types=schema,
                    null_values=[""],
                    strings_can_be_null=True,
                    true_values=["true"],
                    false_values=["false"],
                ),
            ).select(schema.names)
        else:
            continue
        tables[table.name] = _frame(data)
    return tables
