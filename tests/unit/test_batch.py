"""Blocks shared by the queries of a batch are computed once, and change no cell."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import duckdb
import pytest
import sqlglot
from sqlglot import exp

from carrier_node.cells import RawTable
from carrier_node.data.files import FileSource
from carrier_node.query import batch, render, sql
from carrier_node.query.aggregate import BuildContext
from carrier_node.query.engine import Engine
from fedoversight.periods import Period
from oversight_sim.suites import monthly_suite

PERIOD = Period.parse("2026-01:2026-03")


def _q(text: str) -> exp.Query:
    tree = sqlglot.parse_one(text, read="duckdb")
    assert isinstance(tree, exp.Query)
    return tree


def _sql(tree: exp.Query) -> str:
    return tree.sql(dialect="duckdb")


def test_a_block_two_queries_compute_becomes_one_table_they_both_read() -> None:
    base = "base AS (SELECT e.member_id FROM eligibility AS e WHERE e.sex = 'F')"
    first = _q(f"WITH {base}, own AS (SELECT COUNT(*) AS n FROM base) SELECT n FROM own")
    second = _q(f"WITH {base} SELECT base.member_id FROM base WHERE base.member_id > '1'")
    plan = batch.plan([first, second])

    assert [t.uses for t in plan.shared] == [2]
    shared = plan.shared[0]
    assert shared.name.startswith(batch.PREFIX)
    assert shared.last_use == 1
    assert "eligibility" in _sql(shared.body)
    # Both queries read the table under the old name, and neither computes the block itself.
    for query in plan.queries:
        text = _sql(query)
        assert f"{shared.name} AS base" in text
        assert "eligibility" not in text
    # The block only the first query has stays a CTE of it.
    assert "COUNT(*)" in _sql(plan.queries[0])
    create = shared.create_statement("duckdb")
    assert create.startswith(f"CREATE TEMPORARY TABLE {shared.name} AS SELECT")


def test_planning_leaves_the_given_queries_as_they_were() -> None:
    base = "base AS (SELECT e.member_id FROM eligibility AS e WHERE e.sex = 'F')"
    queries = [
        _q(f"WITH {base}, own AS (SELECT COUNT(*) AS n FROM base) SELECT n FROM own"),
        _q(f"WITH {base} SELECT base.member_id FROM base WHERE base.member_id > '1'"),
    ]
    before = [_sql(q) for q in queries]
    withs = [q.args["with_"] for q in queries]
    plan = batch.plan(queries)
    assert [_sql(q) for q in queries] == before
    for query, with_ in zip(queries, withs, strict=True):
        assert query.args["with_"] is with_ and with_.parent is query
    # The plan's trees are its own: changing them changes no given query.
    for tree in (*plan.queries, *(t.body for t in plan.shared)):
        for table in tree.find_all(exp.Table):
            table.set("this", exp.to_identifier("elsewhere"))
    assert [_sql(q) for q in queries] == before


def test_blocks_of_the_same_name_but_other_content_are_not_merged() -> None:
    first = _q("WITH mm AS (SELECT 1 AS x) SELECT x FROM mm")
    second = _q("WITH mm AS (SELECT 2 AS x) SELECT x FROM mm")
    assert batch.plan([first, second]).shared == ()


def test_same_text_over_differently_defined_blocks_is_not_merged() -> None:
    # "top" reads the same words in both queries, but its "base" differs.
    first = _q("WITH base AS (SELECT 1 AS x), top AS (SELECT x FROM base) SELECT x FROM top")
    second = _q("WITH base AS (SELECT 2 AS x), top AS (SELECT x FROM base) SELECT x FROM top")
    assert batch.plan([first, second]).shared == ()


def _run_plan(plan: batch.BatchPlan) -> list[list[tuple[object, ...]]]:
    con = duckdb.connect(":memory:")
    con.execute("CREATE TABLE eligibility AS SELECT range AS x FROM range(10)")
    for table in plan.shared:
        con.execute(table.create_statement("duckdb"))
    return [sorted(con.execute(_sql(q)).fetchall()) for q in plan.queries]


def _run_each(queries: list[exp.Query]) -> list[list[tuple[object, ...]]]:
    con = duckdb.connect(":memory:")
    con.execute("CREATE TABLE eligibility AS SELECT range AS x FROM range(10)")
    return [sorted(con.execute(_sql(q)).fetchall()) for q in queries]


def test_a_block_only_another_shared_block_reads_goes_into_its_statement() -> None:
    text = "WITH a AS (SELECT x FROM eligibility), b AS (SELECT x + 1 AS y FROM a) SELECT y FROM b"
    queries = [_q(text), _q(text + " WHERE y > 3")]
    plan = batch.plan(queries)
    (b,) = plan.shared  # a is not a table of its own: b's statement computes it
    assert b.uses == 2
    assert _sql(b.body).startswith("WITH shared_")
    assert "eligibility" in _sql(b.body)
    assert _run_plan(plan) == _run_each(queries)


def test_what_a_table_reads_is_a_table_made_before_it() -> None:
    text = (
        "WITH a AS (SELECT x FROM eligibility), b AS (SELECT x + 1 AS y FROM a)"
        " SELECT b.y, a.x FROM b JOIN a ON a.x = b.y"
    )
    queries = [_q(text), _q(text + " WHERE b.y > 3")]
    plan = batch.plan(queries)
    a, b = plan.shared  # the queries read a as well: a table, made first
    assert a.name in _sql(b.body)
    assert "WITH" not in _sql(b.body)
    assert _run_plan(plan) == _run_each(queries)


_TOTALS = (
    "WITH t AS (SELECT x % 3 AS k, SUM(x) AS total, COUNT(*) AS n, MAX(x) AS top"
    " FROM eligibility GROUP BY x % 3)"
)


def _columns(table: batch.SharedTable) -> list[str]:
    body = table.body
    assert isinstance(body, exp.Select)
    return [e.alias_or_name for e in body.expressions]


def test_a_shared_block_computes_only_the_columns_its_readers_use() -> None:
    queries = [_q(_TOTALS + " SELECT k, total FROM t"), _q(_TOTALS + " SELECT t.k, t.n FROM t")]
    plan = batch.plan(queries)
    (t,) = plan.shared
    assert _columns(t) == ["k", "total", "n"]  # top: read by neither
    assert _run_plan(plan) == _run_each(queries)


def test_a_block_pruned_narrows_what_it_reads_of_the_block_below() -> None:
    text = _TOTALS + ", u AS (SELECT k, total, n FROM t)"
    queries = [_q(text + " SELECT k, total FROM u"), _q(text + " SELECT k FROM u WHERE k > 0")]
    plan = batch.plan(queries, min_uses=1)
    (u,) = plan.shared  # t, read by u alone, is a CTE of u's statement
    assert _columns(u) == ["k", "total"]
    (t,) = u.body.args["with_"].expressions
    assert [e.alias_or_name for e in t.this.expressions] == ["k", "total"]  # n: read by u no more
    assert _run_plan(plan) == _run_each(queries)


#: A block whose subquery also counts rows found in a code list, which no reader asks for.
_FLAGGED = (
    "WITH t AS (SELECT s.k AS k, s.total AS total, s.flagged AS flagged FROM ("
    "SELECT e.x % 3 AS k, SUM(e.x) AS total, SUM(CASE WHEN e.x IN"
    " (SELECT c.code FROM (VALUES (1), (2)) AS c(code)) THEN 1 ELSE 0 END) AS flagged"
    " FROM eligibility AS e GROUP BY e.x % 3) AS s)"
)


def test_a_block_computes_inside_only_what_its_readers_use() -> None:
    queries = [_q(_FLAGGED + " SELECT t.k, t.total FROM t"), _q(_FLAGGED + " SELECT t.k FROM t")]
    plan = batch.plan(queries)
    (t,) = plan.shared
    assert _columns(t) == ["k", "total"]
    # Not only its outputs: the subquery no longer counts the flagged rows, nor looks them up.
    inside = _sql(t.body)
    assert "flagged" not in inside and "VALUES" not in inside
    assert _run_plan(plan) == _run_each(queries)
    # A query alone is pruned alike (the code list is read only where a reader needs it).
    wanted = _q(_FLAGGED + " SELECT t.k, t.flagged FROM t")
    kept = _sql(sql.prune_unused_columns(wanted.copy()))
    assert "VALUES" in kept and "SUM(e.x)" not in kept
    assert _run_each([_q(kept)]) == _run_each([wanted])


def test_subqueries_with_unqualified_names_or_stars_are_left_whole() -> None:
    unqualified = _q(
        "SELECT s.k AS k FROM (SELECT x % 3 AS k, SUM(x) AS total FROM eligibility"
        " GROUP BY x % 3) AS s"
    )
    # (A table of unknown columns: the data schema's are known, see the test below.)
    starred = _q("SELECT s.k AS k FROM (SELECT e.* , e.x % 3 AS k FROM things AS e) AS s")
    for query in (unqualified, starred):
        before = _sql(query)
        assert _sql(sql.prune_unused_columns(query)) == before
    # Where the outer query has a star, a subquery below it that is whole is still pruned.
    mixed = _q(
        "SELECT * FROM (SELECT s.k AS k FROM (SELECT e.x % 3 AS k, SUM(e.x) AS total"
        " FROM eligibility AS e GROUP BY e.x % 3) AS s) AS w"
    )
    assert "SUM" not in _sql(sql.prune_unused_columns(mixed.copy()))
    assert _run_each([sql.prune_unused_columns(mixed.copy())]) == _run_each([mixed])


def test_stars_over_known_columns_are_named_so_what_nobody_reads_goes() -> None:
    """A block read by ``SELECT *`` (through a CTE) and by ``alias.*`` is still pruned to what
    the readers use in the end: the stars become the block's columns first."""
    spans = (
        "spans AS (SELECT e.x AS x, e.x * 2 AS doubled, e.x % 3 AS k,"
        " (SELECT COUNT(*) FROM eligibility AS c WHERE c.x < e.x) AS heavy FROM eligibility AS e)"
    )
    queries = [
        _q(
            f"WITH {spans}, last AS (SELECT * FROM spans AS s WHERE s.k = 1)"
            " SELECT l.x FROM last AS l"
        ),
        _q(
            f"WITH {spans}, flagged AS (SELECT s.*, s.x > 4 AS big FROM spans AS s)"
            " SELECT f.doubled, f.big FROM flagged AS f"
        ),
    ]
    plan = batch.plan(queries)
    (block,) = plan.shared
    assert _columns(block) == ["x", "doubled", "k"]
    assert "COUNT" not in _sql(block.body)
    assert _run_plan(plan) == _run_each(queries)


def test_a_star_over_a_schema_table_names_its_columns() -> None:
    """The data schema's tables have every column of the schema in every source (NULL where
    the data lacks one), so ``alias.*`` of one is known and pruned like any list."""
    query = _q("SELECT s.member_id AS m FROM (SELECT e.* FROM eligibility AS e) AS s")
    assert _sql(sql.prune_unused_columns(query)) == (
        "SELECT s.member_id AS m FROM (SELECT e.member_id AS member_id FROM eligibility AS e) AS s"
    )
    # A CTE named like a table is the CTE.
    shadowing = _q("WITH eligibility AS (SELECT 1 AS x) SELECT * FROM eligibility")
    sql.expand_stars(shadowing)
    assert _sql(shadowing).endswith("SELECT eligibility.x AS x FROM eligibility")
    # A table of another schema may lack columns: its star stays.
    elsewhere = _q("SELECT * FROM warehouse.eligibility AS e")
    sql.expand_stars(elsewhere)
    assert _sql(elsewhere) == "SELECT * FROM warehouse.eligibility AS e"
    # A star with modifiers stays.
    excluding = _q("SELECT * EXCLUDE (sex) FROM eligibility AS e")
    sql.expand_stars(excluding)
    assert _sql(excluding) == "SELECT * EXCLUDE (sex) FROM eligibility AS e"


@pytest.mark.parametrize("int64_sums", [False, True], ids=["128-bit", "64-bit"])
def test_a_request_of_a_few_metrics_checks_no_code_it_does_not_report(int64_sums: bool) -> None:
    """Cost, denial and visit metrics read a few totals of the claim rows per member month:
    their batch leaves out the data-quality code lookups that block makes, its sums in 64
    bits or not."""
    few_metrics = [q for q in monthly_suite() if q.metric in _FEW]
    assert len(few_metrics) == len(_FEW)
    keying = render.Keying("k" * 32, int64_sums=int64_sums)
    few = render.render_batch.__wrapped__(
        "duckdb", None, None, _JANUARY, tuple(few_metrics), keying
    )
    whole = render.render_batch.__wrapped__(
        "duckdb", None, None, _JANUARY, tuple(monthly_suite()), keying
    )

    def statements(rendered: render.RenderedBatch) -> str:
        return " ".join([s for _, s, _, _ in rendered.shared] + list(rendered.queries))

    assert "invalid_revenue_code" in statements(whole) and "code_list" in statements(whole)
    assert "invalid_revenue_code" not in statements(few)
    assert "code_list" not in statements(few)
    assert ("SUM_NO_OVERFLOW(" in statements(few).upper()) is int64_sums


@pytest.mark.parametrize("int64_sums", [False, True], ids=["128-bit", "64-bit"])
def test_one_metric_alone_checks_no_code_it_does_not_report(int64_sums: bool) -> None:
    """A query rendered alone is pruned whole, through its CTEs (the period's months are a
    VALUES list, its keys named with their table): cost.pmpm reads two totals of the claim
    rows per member month and checks no line's codes."""
    keying = render.Keying("k" * 32, int64_sums=int64_sums)
    for metric in _FEW:
        (query,) = [q for q in monthly_suite() if q.metric == metric]
        text = render.render.__wrapped__("duckdb", None, None, _JANUARY, query, keying)
        assert "code_list" not in text and "invalid_revenue_code" not in text
        assert "paid_lag_" not in text
    (suite_query,) = [q for q in monthly_suite() if q.metric == "ops.data_quality"]
    whole = render.render.__wrapped__("duckdb", None, None, _JANUARY, suite_query, keying)
    assert "invalid_revenue_code" in whole and "code_list" in whole


#: Metrics reading the claim rows' totals per member month, none of their data-quality counts.
_FEW = ("enrollment.member_months", "cost.pmpm", "ops.denial_rate", "util.ed_visits")
_JANUARY = Period.parse("2026-01")


def test_no_column_is_dropped_where_a_reader_takes_them_all_or_the_list_decides_rows() -> None:
    star = [_q(_TOTALS + " SELECT k FROM t"), _q(_TOTALS + " SELECT t.* FROM t")]
    (t,) = batch.plan(star).shared
    assert _columns(t) == ["k", "total", "n", "top"]
    distinct = "WITH d AS (SELECT DISTINCT x % 2 AS a, x % 3 AS b FROM eligibility)"
    queries = [_q(distinct + " SELECT a FROM d"), _q(distinct + " SELECT COUNT(*) FROM d")]
    plan = batch.plan(queries)
    (d,) = plan.shared
    assert _columns(d) == ["a", "b"]  # dropping b would merge rows
    assert _run_plan(plan) == _run_each(queries)
    grouped_all = (
        "WITH g AS (SELECT x % 2 AS a, x % 3 AS b, SUM(x) AS s FROM eligibility GROUP BY ALL)"
    )
    queries = [_q(grouped_all + " SELECT a, s FROM g"), _q(grouped_all + " SELECT s FROM g")]
    plan = batch.plan(queries)
    (g,) = plan.shared
    assert _columns(g) == ["a", "b", "s"]
    assert _run_plan(plan) == _run_each(queries)


def test_a_query_with_a_nested_with_runs_as_it_is() -> None:
    nested = _q(
        "WITH a AS (SELECT 1 AS x) SELECT * FROM (WITH a AS (SELECT 2 AS x) SELECT x FROM a)"
    )
    plain = _q("WITH a AS (SELECT 1 AS x) SELECT x FROM a")
    plan = batch.plan([nested, plain])
    assert plan.shared == ()
    assert _sql(plan.queries[0]) == _sql(nested)
    # Found after its blocks were renamed (the query given to be rewritten in place): what
    # was renamed is put back, and it runs as it was written.
    text = (
        "WITH a AS (SELECT 1 AS x), b AS (SELECT a.x + 1 AS y FROM a)"
        " SELECT * FROM b, (WITH a AS (SELECT 2 AS x) SELECT x FROM a) AS n"
    )
    other = "WITH a AS (SELECT 1 AS x), b AS (SELECT a.x + 1 AS y FROM a) SELECT y FROM b"
    plan = batch.plan([_q(text), _q(other)], owned=True)
    assert _sql(plan.queries[0]) == _sql(_q(text))
    assert [len(t) for t in _run_plan(plan)] == [1, 1]


def test_the_suite_shares_member_months_and_fills() -> None:
    from carrier_node.query import metrics

    exprs = [metrics.build(BuildContext("c001", PERIOD, q)) for q in monthly_suite()]
    plan = batch.plan(exprs)
    uses = sorted(t.uses for t in plan.shared)
    assert uses[-1] == len(exprs)  # the period's months, in every query
    assert len(plan.shared) >= 5


def test_the_suite_groups_claim_rows_per_member_month_once() -> None:
    """pmpm, member cost share, out-of-network share, the persons' totals, the claims lag and
    data quality all read one shared per-member-month block (directly, or through the block
    joining it to the member months once): no other statement of the batch groups the claim
    rows by member and month on its own."""
    from carrier_node.query import metrics

    queries = list(monthly_suite())
    exprs = [metrics.build(BuildContext("c001", PERIOD, q)) for q in queries]
    plan = batch.plan(exprs)
    spend = [
        t
        for t in plan.shared
        if "AS pharmacy_member_paid_cents" in _sql(t.body) and "invalid_drg" in _sql(t.body)
    ]
    assert len(spend) == 1
    enrolled = [t for t in plan.shared if spend[0].name in _sql(t.body) and t is not spend[0]]
    assert len(enrolled) == 1, "the spend of enrolled member months, one block"
    blocks = (spend[0].name, enrolled[0].name)
    readers = {
        q.metric
        for q, tree in zip(queries, plan.queries, strict=True)
        if any(name in _sql(tree) for name in blocks)
    }
    assert {
        "cost.pmpm",
        "cost.member_cost_share_pmpm",
        "cost.out_of_network_share",
        "ops.claims_lag",
        "ops.data_quality",
    } <= readers
    persons = [t for t in plan.shared if enrolled[0].name in _sql(t.body)]
    assert persons, "the persons' period totals read the block too"
    # Nowhere else is the deductible (a medical-only column) summed from the rows, nor the
    # paid date read.
    others = [*plan.queries, *(t.body for t in plan.shared if t is not spend[0])]
    assert not any("deductible_amount" in _sql(tree) for tree in others)
    assert not any("paid_date" in _sql(tree) for tree in others)


def _evaluate_each(engine: Engine) -> list[RawTable]:
    return [engine.evaluate(PERIOD, q) for q in monthly_suite()]


def test_a_batch_gives_the_cells_of_its_queries_one_by_one(
    federation_data: dict[str, Path],
) -> None:
    source = FileSource(federation_data["c002"])
    source.open()
    try:
        engine = Engine(source, "c002")
        expected = _evaluate_each(engine)
        got = engine.evaluate_many(PERIOD, monthly_suite())
        assert engine.last_batch.shared_blocks >= 5
        assert len(engine.last_batch.query_seconds) == len(got)
    finally:
        source.close()
    assert sum(len(t.cells) for t in expected) > 50, "the carrier has cells to compare"
    assert [t.query for t in got] == [t.query for t in expected]
    for one, many in zip(expected, got, strict=True):
        assert many.cells == one.cells, one.query.metric


def test_a_shared_table_exists_only_from_its_first_reader_to_its_last(
    federation_data: dict[str, Path],
) -> None:
    """Tables are made just before the first query needing them and dropped after the last,
    so a batch holds only the blocks in use (the suite at 2M members: peak 3.4 -> 2.6 GB)."""
    source = FileSource(federation_data["c002"])
    source.open()
    events: list[tuple[str, str]] = []
    opened = source.session

    @contextlib.contextmanager
    def recording():  # type: ignore[no-untyped-def]
        with opened() as session:
            create, drop, run = session.create_table, session.drop_table, session.execute_arrow

            def create_table(name: str, statement: str) -> None:
                events.append(("create", name))
                create(name, statement)

            def drop_table(name: str) -> None:
                events.append(("drop", name))
                drop(name)

            def execute_arrow(sql: str):  # type: ignore[no-untyped-def]
                events.append(("query", ""))
                return run(sql)

            session.create_table = create_table  # type: ignore[method-assign]
            session.drop_table = drop_table  # type: ignore[method-assign]
            session.execute_arrow = execute_arrow  # type: ignore[method-assign]
            yield session

    try:
        engine = Engine(source, "c002")
        queries = tuple(monthly_suite())
        rendered = engine.render_batch(PERIOD, queries)
        source.session = recording  # type: ignore[method-assign]
        engine.evaluate_many(PERIOD, queries)
    finally:
        source.close()
    tables = {name: (first, last) for name, _, first, last in rendered.shared}
    assert len(tables) >= 5 and any(first > 0 for first, _ in tables.values())

    def queries_before(event: tuple[str, str]) -> int:
        return sum(1 for e in events[: events.index(event)] if e[0] == "query")

    for name, (first, last) in tables.items():
        assert queries_before(("create", name)) == first, name
        assert queries_before(("drop", name)) == last + 1, name


def test_batches_at_once_on_one_source_keep_their_tables_apart(
    federation_data: dict[str, Path],
) -> None:
    # The daemon may evaluate two requests at the same time: each batch's temporary tables
    # live on its own cursor, so equal names (content digests) never collide.
    source = FileSource(federation_data["c004"])
    source.open()
    try:
        engine = Engine(source, "c004")
        expected = _evaluate_each(engine)
        results: list[list[RawTable]] = []
        errors: list[BaseException] = []

        def run() -> None:
            try:
                results.append(engine.evaluate_many(PERIOD, monthly_suite()))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        source.close()
    assert not errors
    assert len(results) == 3
    for got in results:
        assert [t.cells for t in got] == [t.cells for t in expected]


def test_a_carrier_filtered_out_gets_no_cells_in_a_batch(
    federation_data: dict[str, Path],
) -> None:
    import dataclasses

    from fedoversight.dimensions import Dimension

    queries = monthly_suite()[:3]
    elsewhere = dataclasses.replace(queries[1], filters=((Dimension.CARRIER, ("c999",)),))
    here = dataclasses.replace(queries[2], filters=((Dimension.CARRIER, ("c002",)),))
    source = FileSource(federation_data["c002"])
    source.open()
    try:
        engine = Engine(source, "c002")
        got = engine.evaluate_many(PERIOD, [queries[0], elsewhere, here])
        alone = engine.evaluate(PERIOD, queries[2])
    finally:
        source.close()
    assert got[1].cells == () and got[1].query == elsewhere
    assert got[2].cells == alone.cells and got[2].cells
    assert got[2].query == queries[2]  # as evaluated here: the carrier filter is answered


def test_rows_holding_a_member_month_once_are_not_grouped_again_by_month() -> None:
    """Cells by month over rows with one row per member month: the per-member aggregation is
    dropped from the select list (a subquery keeps its own), and the rows are the same."""
    from carrier_node.query.aggregate import one_row_per_member_month, per_member
    from fedoversight.dimensions import Dimension

    def query() -> exp.Select:
        grouped = _q(
            "SELECT l.member_id AS member_id, l.month_start AS month_start,"
            " SUM(l.cents) AS cents FROM lines AS l GROUP BY l.member_id, l.month_start"
        )
        rows = _q(
            "SELECT 1 AS claimants, SUM(r.cents) AS cents FROM r"
            " JOIN mm ON r.member_id = mm.member_id AND r.month_start = mm.month_start"
        )
        assert isinstance(rows, exp.Select)
        rows.set("from_", exp.From(this=grouped.subquery("r")))
        return per_member(rows, [exp.column("month", "mm")], exp.column("member_id", "r"))

    by_month = one_row_per_member_month(query(), (Dimension.MONTH,))
    assert by_month.args.get("group") is None
    assert "SUM(l.cents)" in _sql(by_month)  # the subquery's own sum stays
    assert "SUM(r.cents)" not in _sql(by_month) and "MIN(mm.member_key)" not in _sql(by_month)
    by_plan = one_row_per_member_month(query(), (Dimension.PLAN_CODE,))
    assert _sql(by_plan) == _sql(query())

    con = duckdb.connect()
    con.execute(
        "CREATE TABLE lines AS SELECT * FROM (VALUES ('a', DATE '2026-01-01', 5),"
        " ('a', DATE '2026-01-01', 7), ('a', DATE '2026-02-01', 1), ('b', DATE '2026-01-01', 2))"
        " AS t(member_id, month_start, cents)"
    )
    con.execute(
        "CREATE TABLE mm AS SELECT * FROM (VALUES ('a', DATE '2026-01-01', '2026-01', 'ka'),"
        " ('a', DATE '2026-02-01', '2026-02', 'ka'), ('b', DATE '2026-01-01', '2026-01', 'kb'))"
        " AS t(member_id, month_start, month, member_key)"
    )
    columns = "month, member_id, member_key, claimants, cents"
    rows = sorted(con.sql(f"SELECT {columns} FROM ({_sql(by_month)})").fetchall())
    assert rows == sorted(con.sql(f"SELECT {columns} FROM ({_sql(query())})").fetchall())
    assert rows == [
        ("2026-01", "a", "ka", 1, 12),
        ("2026-01", "b", "kb", 1, 2),
        ("2026-02", "a", "ka", 1, 1),
    ]


def test_postgres_reads_each_rows_lag_once_and_duckdb_renders_it_plain() -> None:
    """The spend block's per-row projection is kept a subquery on PostgreSQL (``OFFSET 0``):
    pulled up, its months to payment were computed again in each of the 13 lag buckets and the
    claims lag took 3x as long at 200k members. DuckDB's text has no fence."""
    from carrier_node.query import render
    from carrier_node.query.render import Keying

    query = next(q for q in monthly_suite() if q.metric == "ops.claims_lag")
    keying = Keying("secret")
    postgres = render.render("postgres", None, None, PERIOD, query, keying)
    duckdb_text = render.render("duckdb", None, None, PERIOD, query, keying)
    assert postgres.count("OFFSET 0") == 1
    assert "OFFSET" not in duckdb_text
    batch_text = render.render_batch("postgres", None, None, PERIOD, (query, query), keying, 1)
    assert sum(s.count("OFFSET 0") for _, s, _, _ in batch_text.shared) == 1


def test_the_installed_sqlglot_is_its_compiled_build() -> None:
    """pyproject asks for sqlglot's compiled build (the ``c`` extra): rendering the suite cold
    took 0.46 s without it and 0.28 s with it. An install that lost it (a sqlglot upgraded
    past the newest sqlglotc, say) would still work, 1.6x slower: this says so."""
    from carrier_node.query.render import compiled_sqlglot

    assert compiled_sqlglot(), f"sqlglot {sqlglot.__version__} runs as pure Python"
