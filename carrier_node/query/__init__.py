"""A request's metrics as SQL where the data lives, and their results as raw cells.

:mod:`~carrier_node.query.metrics` (one module per family of catalogue metrics, each builder
registered against its declaration in :mod:`~carrier_node.query.registry`) builds each query as
expressions from :mod:`~carrier_node.query.aggregate` (the cells and the disclosure columns of
each declared statistic kind) and :mod:`~carrier_node.query.sql` (the shared pieces: member
months, claim lines, stays, fills). :mod:`~carrier_node.query.render` turns them into the
source's dialect, :mod:`~carrier_node.query.batch` shares blocks across a request's queries,
:mod:`~carrier_node.query.engine` runs them and :mod:`~carrier_node.query.decode` reads the
results into :mod:`carrier_node.cells`. Raw cells are exact and never leave the node.
"""
