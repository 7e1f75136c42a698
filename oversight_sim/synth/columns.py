"""Arrow columns and tables in the data schema (:mod:`fedoversight.schema`).

Money is ``decimal128(18, 2)`` made exactly from integer cents, dates are ``date32``, codes are
dictionary-encoded while a table is built (Parquet stores them as plain strings) and cast to
plain strings for frames.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from fedoversight.schema import TABLES, ColumnType, Table
from oversight_sim.synth.arrays import BoolArray, IntArray

_ARROW_TYPES: dict[ColumnType, pa.DataType] = {
    ColumnType.CODE: pa.string(),
    ColumnType.DATE: pa.date32(),
    ColumnType.MONEY: pa.decimal128(18, 2),
    ColumnType.BOOL: pa.bool_(),
    ColumnType.INT: pa.int64(),
    ColumnType.NUMBER: pa.float64(),
}


def arrow_schema(table: Table) -> pa.Schema:
    """The Arrow (and Parquet) schema of a schema table: every column, in order."""
    return pa.schema([pa.field(c.name, _ARROW_TYPES[c.type]) for c in table.columns])


def _validity(null: BoolArray | None) -> pa.Buffer | None:
    if null is None or not null.any():
        return None
    return pa.array(~null).buffers()[1]


def _money(cents: IntArray, null: BoolArray | None = None) -> pa.Array:
    """decimal128(18, 2) from integer cents, exactly."""
    words = np.empty((len(cents), 2), dtype=np.int64)
    words[:, 0] = cents
    np.right_shift(cents, 63, out=words[:, 1])
    return pa.Array.from_buffers(
        pa.decimal128(18, 2), len(cents), [_validity(null), pa.py_buffer(words)]
    )


def _dates(days: IntArray, null: BoolArray | None = None) -> pa.Array:
    return pa.array(days.astype(np.int32), type=pa.date32(), mask=null)


@cache
def _vocab_array(vocab: tuple[str, ...]) -> pa.Array:
    return pa.array(list(vocab), type=pa.string())


def _encoded(values: pa.Array, index: IntArray) -> pa.Array:
    """Dictionary-encoded strings (index -1: null). Parquet stores them as plain strings;
    :func:`_plain` decodes them for frames."""
    null = index < 0
    indices = pa.array(np.where(null, 0, index).astype(np.int32), mask=null if null.any() else None)
    return pa.DictionaryArray.from_arrays(indices, values)


def _codes(vocab: Sequence[str], index: IntArray) -> pa.Array:
    return _encoded(_vocab_array(tuple(vocab)), index)


def _used(values: pa.Array, index: IntArray) -> pa.Array:
    """Like :func:`_encoded`, with only the values used in the dictionary (keeps Parquet's
    dictionary pages small for large vocabularies such as NPIs)."""
    used = _used_indices(index, len(values))
    remap = np.full(len(values) + 1, -1, dtype=np.int64)  # the last entry maps -1 to -1
    remap[used] = np.arange(len(used))
    return _encoded(values.take(pa.array(used)), remap[index])


def _used_indices(index: IntArray, n: int) -> IntArray:
    """The distinct non-negative values of ``index`` (all below ``n``), sorted."""
    seen = np.bincount(index[index >= 0], minlength=n)
    return np.flatnonzero(seen).astype(np.int64)


def _ids(prefix: str, numbers: IntArray, width: int) -> pa.Array:
    digits = pc.utf8_lpad(pa.array(numbers).cast(pa.string()), width=width, padding="0")
    return pc.binary_join_element_wise(prefix, digits, "")


def _table(schema_table: Table, columns: Mapping[str, pa.Array]) -> pa.Table:
    """A table in the schema's column order; code columns may still be dictionary-encoded."""
    names = [c.name for c in schema_table.columns]
    return pa.Table.from_arrays([columns[name] for name in names], names=names)


def _plain(table: pa.Table, schema_table: Table) -> pa.Table:
    return table.cast(arrow_schema(schema_table))


def _frame(table: pa.Table) -> pd.DataFrame:
    return table.to_pandas(types_mapper=pd.ArrowDtype)


def _schema_table(name: str) -> Table:
    return next(t for t in TABLES if t.name == name)
