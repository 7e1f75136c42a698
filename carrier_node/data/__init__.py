"""Where a carrier's data lives and whether it is fit to answer from.

:mod:`~carrier_node.data.files` (the default: Parquet or CSV files read with embedded DuckDB),
:mod:`~carrier_node.data.warehouse` (PostgreSQL, queries pushed down), both of the
:class:`~carrier_node.data.source.DataSource` shape the query layer runs SQL on; and
:mod:`~carrier_node.data.validation`, the checks of a carrier's files against the data schema
(what ``carrier-node check`` reports). Nothing here knows what a metric is.
"""
