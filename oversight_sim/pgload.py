"""Load a carrier directory (the data schema's tables as Parquet/CSV) into a PostgreSQL schema.

For simulations, tests and benchmarks of the warehouse path: real carriers already have their
warehouse. Tables are created with the data schema's column types and filled with COPY.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from psycopg import sql

from fedoversight.schema import TABLES, ColumnType

_TYPES = {
    ColumnType.CODE: "TEXT",
    ColumnType.DATE: "DATE",
    ColumnType.MONEY: "NUMERIC(18,2)",
    ColumnType.BOOL: "BOOLEAN",
    ColumnType.INT: "BIGINT",
    ColumnType.NUMBER: "DOUBLE PRECISION",
}

#: Rows per COPY batch (bounded memory for large carriers).
BATCH_ROWS = 500_000


def _read(path: Path) -> pa.Table:
    if path.suffix == ".parquet":
        return pq.read_table(path)
    return pacsv.read_csv(
        path,
        convert_options=pacsv.ConvertOptions(strings_can_be_null=True, column_types=None),
    )


def load_directory(conn: psycopg.Connection[Any], schema: str, directory: Path) -> dict[str, int]:
    """Create ``schema`` (replacing it) and load every table found in ``directory``."""
    counts: dict[str, int] = {}
    with conn.cursor() as cur:
        cur.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        cur.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        for table in TABLES:
            path = next(
                (
                    p
                    for p in (directory / f"{table.name}.parquet", directory / f"{table.name}.csv")
                    if p.exists()
                ),
                None,
            )
            if path is None:
                continue
            data = _read(path)
            columns = [c for c in table.columns if c.name in data.column_names]
            cur.execute(
                sql.SQL("CREATE TABLE {}.{} ({})").format(
                    sql.Identifier(schema),
                    sql.Identifier(table.name),
                    sql.SQL(", ").join(
                        sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(_TYPES[c.type]))
                        for c in columns
                    ),
                )
            )
            data = data.select([c.name for c in columns])
            copy = sql.SQL("COPY {}.{} ({}) FROM STDIN WITH (FORMAT csv, HEADER false)").format(
                sql.Identifier(schema),
                sql.Identifier(table.name),
                sql.SQL(", ").join(sql.Identifier(c.name) for c in columns),
            )
            for start in range(0, data.num_rows, BATCH_ROWS):
                chunk = data.slice(start, BATCH_ROWS)
                buffer = io.BytesIO()
                pacsv.write_csv(
                    chunk, buffer, write_options=pacsv.WriteOptions(include_header=False)
                )
                with cur.copy(copy) as out:
                    out.write(buffer.getvalue())
            counts[table.name] = data.num_rows
            cur.execute(
                sql.SQL("ANALYZE {}.{}").format(sql.Identifier(schema), sql.Identifier(table.name))
            )
    return counts
