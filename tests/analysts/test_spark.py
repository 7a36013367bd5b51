"""Spark reads a recorded data directory in place and agrees with the DuckDB views.

One local SparkSession for the module (``local[1]``: the test machines are small), over the demo
data the analyst tests record once per test session (simulator -> recorder -> materialize, with
training sets and their manifest) and over the hand-built scenario of the loader tests (sub-penny
prices, fractional sizes, an undocumented event type, gaps). For each table-equivalent Spark and
DuckDB (``materialize.views``) must give the same rows: deltas per market with exact prices and
sizes, lifecycle events per type with exact settlement prices, participation, the training rows
and the training manifest's exclusions.

``read_segments`` / ``read_training`` / ``read_manifest`` hold the expressions of the Spark
snippet in the README and ``docs/scale-out.md``: this test is what proves it.

CI runs this test (pyspark is in the test extra, Java 17 on the machine): without Java it fails
under ``REQUIRE_POSTGRES=1`` (set by ``.ci/run``) and is skipped with the reason elsewhere.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest

from materialize.training import build_training_sets
from materialize.views import DATE_FROM_PATH, connect
from schemas.log import SEGMENT_GLOB
from tests.support.segments import build_scenario

if os.environ.get("REQUIRE_POSTGRES") == "1":
    import pyspark  # noqa: F401  (CI: pyspark is in the test extra; missing is an error)
else:
    pytest.importorskip("pyspark", reason="pyspark is in the test extra: pip install '.[test]'")

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

# ------------------------------------------------------------------------------------------------
# The README's Spark snippet
# ------------------------------------------------------------------------------------------------


def read_segments(spark: SparkSession, segments: str) -> DataFrame:
    """The session log (``schemas.log.LOG_SCHEMA``) plus ``date``, read in place.

    ``segments`` is ``DATA/segments`` (or ``s3a://bucket/prefix/segments``), or one day or a
    glob of days under it (``.../segments/date=2026-01-*``): only those directories are listed.
    """
    return (
        spark.read.option("recursiveFileLookup", "true")  # session_id: the column in the files
        .option("pathGlobFilter", "*.parquet")
        .parquet(segments)
        .withColumn(
            "date",
            F.to_date(F.regexp_extract("_metadata.file_path", r".*/date=([0-9-]{10})/", 1)),
        )
    )


def read_manifest(spark: SparkSession, training: str) -> DataFrame:
    """``DATA/training/manifest.json``: builds, and the markets excluded with their reason."""
    return (
        spark.read.option("multiLine", "true")
        .schema(
            "builds ARRAY<STRUCT<build_id: BIGINT, dir: STRING>>, "
            "included MAP<STRING, STRUCT<session_id: BIGINT, market_ticker: STRING>>, "
            "excluded MAP<STRING, STRUCT<session_id: BIGINT, market_ticker: STRING, "
            "reason: STRING>>"
        )
        .json(f"{training}/manifest.json")
    )


def read_training(spark: SparkSession, training: str) -> DataFrame:
    """The training rows of the builds the manifest lists (``build`` from the directory)."""
    builds = read_manifest(spark, training).select(F.explode("builds").alias("b")).collect()
    dirs = [f"{training}/{row.b.dir}" for row in builds]
    return spark.read.option("basePath", training).parquet(*dirs)


# Spark SQL over read_segments(...) registered as ``session_log``: the DuckDB views' rules.
DELTAS_SQL = """
SELECT session_id, record_seq, market_ticker, side, price, delta,
       CAST(price AS DECIMAL(24, 0)) * 0.000001BD AS usd,
       CAST(delta AS DECIMAL(24, 0)) * 0.01BD AS contracts
FROM session_log
WHERE kind = 'in' AND msg_type = 'orderbook_delta' AND NOT malformed
  AND market_ticker IS NOT NULL AND side IS NOT NULL AND price IS NOT NULL AND delta IS NOT NULL
"""
# a settled event without its own value carries the market's last determination's value
LIFECYCLE_SQL = """
WITH ev AS (
    SELECT session_id, record_seq, market_ticker, event_type,
           CASE WHEN abs(settlement_value) < 1000000000000000000
                THEN CAST(settlement_value AS DECIMAL(24, 0)) * 0.000001BD END AS price
    FROM session_log
    WHERE kind = 'in' AND msg_type IN ('market_lifecycle_v2', 'multivariate_market_lifecycle')
      AND event_type IS NOT NULL AND market_ticker IS NOT NULL
)
SELECT session_id, record_seq, market_ticker, event_type,
       CASE WHEN event_type = 'settled' AND price IS NULL
            THEN last(CASE WHEN event_type = 'determined' THEN price END, true) OVER (
                PARTITION BY market_ticker ORDER BY session_id, record_seq
                ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
            ELSE price END AS settlement_price
FROM ev
"""
PARTICIPATION_SQL = """
WITH d AS (
    SELECT session_id, record_seq, msg_type, CAST(raw AS STRING) AS p
    FROM session_log
    WHERE kind = 'decision' AND msg_type IN ('market_joined', 'market_left')
),
ev AS (
    SELECT session_id, record_seq, msg_type,
           get_json_object(p, '$.market_ticker') AS market_ticker,
           get_json_object(p, '$.reason') AS reason,
           coalesce(get_json_object(p, '$.mid_lifecycle') = 'true', false) AS mid_lifecycle
    FROM d
),
ordered AS (
    SELECT *, lead(msg_type) OVER w AS next_type, lead(reason) OVER w AS next_reason
    FROM ev WHERE market_ticker IS NOT NULL
    WINDOW w AS (PARTITION BY session_id, market_ticker ORDER BY record_seq)
)
SELECT session_id, market_ticker,
       coalesce(nullif(reason, ''), 'unknown') AS join_reason,
       CASE WHEN next_type = 'market_left' THEN next_reason END AS leave_reason,
       coalesce(next_type = 'market_left', false) AS left,
       mid_lifecycle
FROM ordered WHERE msg_type = 'market_joined'
"""


# ------------------------------------------------------------------------------------------------
# Fixtures
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spark() -> Iterator[SparkSession]:
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        reason = "Spark needs Java (17): apt-get install openjdk-17-jre-headless"
        if os.environ.get("REQUIRE_POSTGRES") == "1":  # CI: never skipped
            pytest.fail(reason)
        pytest.skip(reason)
    session = (
        SparkSession.builder.master("local[1]")
        .appName("kalshi-spark-test")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "1")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.memory", "512m")
        .config("spark.sql.ansi.enabled", "true")
        # small data: a JVM that starts fast beats one that optimises long-running code
        .config("spark.driver.extraJavaOptions", "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    try:
        yield session
    finally:
        session.stop()


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("spark-scenario")
    build_scenario(root)
    build_training_sets(root, root / "training")
    return root


@pytest.fixture(scope="module", params=["demo", "scenario"])
def data_dir(request: pytest.FixtureRequest) -> Path:
    path: Path = request.getfixturevalue(request.param)  # the "demo" or "scenario" fixture
    return path


def spark_log(spark: SparkSession, data_dir: Path) -> DataFrame:
    log = read_segments(spark, (data_dir / "segments").as_posix())
    log.createOrReplaceTempView("session_log")
    return log


def rows(df: DataFrame) -> list[tuple[Any, ...]]:
    return sorted(tuple(r) for r in df.collect())


def duck(con: duckdb.DuckDBPyConnection, sql: str) -> list[tuple[Any, ...]]:
    return sorted(tuple(r) for r in con.execute(sql).fetchall())


# ------------------------------------------------------------------------------------------------
# Tests
# ------------------------------------------------------------------------------------------------


def test_the_snippet_reads_the_same_pattern_as_the_views() -> None:
    # the README shows the short pattern; both pick the same directory name
    import re

    path = "file:///data/date=2026-01-01/x/segments/date=2026-11-29/session_id=7/part-1.parquet"
    assert re.match(DATE_FROM_PATH, path)[1] == "2026-11-29"  # type: ignore[index]
    assert re.match(r".*/date=([0-9-]{10})/", path)[1] == "2026-11-29"  # type: ignore[index]


def test_log_rows_days_and_sessions_agree(spark: SparkSession, data_dir: Path) -> None:
    log = spark_log(spark, data_dir)
    con = connect(data_dir)
    per_file = duck(
        con, "SELECT date, session_id, count(*), max(record_seq) FROM session_log GROUP BY ALL"
    )
    assert per_file, "the data directory must not be empty"
    got = rows(log.groupBy("date", "session_id").agg(F.count("*"), F.max("record_seq")))
    assert got == per_file
    # one day's directory only: Spark lists just that day
    day = per_file[0][0]
    one_day = read_segments(spark, (data_dir / "segments" / f"date={day}").as_posix())
    assert one_day.count() == sum(n for d, _, n, _ in per_file if d == day)


def test_deltas_per_market_and_exact_prices_agree(spark: SparkSession, data_dir: Path) -> None:
    spark_log(spark, data_dir)
    con = connect(data_dir)
    deltas = spark.sql(DELTAS_SQL)
    got = rows(deltas)
    want = duck(
        con,
        "SELECT session_id, record_seq, market_ticker, side, price, delta, usd(price), "
        "contracts(delta) FROM rl_orderbook_deltas",
    )
    assert got and got == want
    assert all(isinstance(r[6], Decimal) and isinstance(r[7], Decimal) for r in got)
    per_market = rows(
        deltas.groupBy("market_ticker").agg(
            F.count("*"), F.min("usd"), F.max("usd"), F.sum(F.abs("contracts"))
        )
    )
    assert per_market == duck(
        con,
        "SELECT market_ticker, count(*), min(usd(price)), max(usd(price)), "
        "sum(abs(contracts(delta))) FROM rl_orderbook_deltas GROUP BY market_ticker",
    )


def test_lifecycle_events_per_type_agree(spark: SparkSession, data_dir: Path) -> None:
    spark_log(spark, data_dir)
    con = connect(data_dir)
    events = spark.sql(LIFECYCLE_SQL)
    assert rows(events) == duck(
        con,
        "SELECT session_id, record_seq, market_ticker, event_type, settlement_price "
        "FROM rl_market_lifecycle_events",
    )
    per_type = rows(events.groupBy("event_type").count())
    assert per_type == duck(
        con, "SELECT event_type, count(*) FROM rl_market_lifecycle_events GROUP BY 1"
    )
    assert {"created", "determined"} <= {t for t, _ in per_type}


def test_participation_agrees(spark: SparkSession, data_dir: Path) -> None:
    spark_log(spark, data_dir)
    con = connect(data_dir)
    got = rows(spark.sql(PARTICIPATION_SQL))
    want = duck(
        con,
        "SELECT session_id, market_ticker, join_reason, leave_reason, left_at IS NOT NULL, "
        "mid_lifecycle FROM rl_market_participation",
    )
    assert got and got == want
    assert any(r[4] for r in got), "some market must have left"


def test_training_rows_and_manifest_agree(spark: SparkSession, data_dir: Path) -> None:
    training = (data_dir / "training").as_posix()
    con = connect(data_dir)
    train = read_training(spark, training)
    got = rows(
        train.groupBy("build", "session_id", "market_ticker", "phase").agg(
            F.count("*"), F.sum("best_yes_bid"), F.sum("spread"), F.max("record_seq")
        )
    )
    assert got == duck(
        con,
        "SELECT build, session_id, market_ticker, phase, count(*), sum(best_yes_bid), "
        "sum(spread), max(record_seq) FROM training_rows GROUP BY ALL",
    )
    assert got, "the data directory must have training rows"

    manifest = read_manifest(spark, training)
    excluded = manifest.select(F.explode("excluded")).select("value.*")
    assert rows(excluded.groupBy("reason").count()) == duck(
        con,
        "SELECT reason, count(*) FROM training_markets WHERE status = 'excluded' GROUP BY 1",
    )
    included = manifest.select(F.explode("included")).select("value.*")
    assert rows(included.select("session_id", "market_ticker")) == duck(
        con, "SELECT session_id, market_ticker FROM training_markets WHERE status = 'included'"
    )
    raw = json.loads((data_dir / "training" / "manifest.json").read_text())
    assert manifest.select(F.size("builds")).first()[0] == len(raw["builds"])  # type: ignore[index]


def test_session_id_column_wins_over_its_directory_in_every_engine(
    spark: SparkSession, scenario: Path, tmp_path: Path
) -> None:
    """A segment filed under the wrong session_id= directory keeps its rows' session_id in
    DuckDB, Spark and the loader's segment index alike."""
    data = tmp_path / "data"
    shutil.copytree(scenario / "segments", data / "segments")
    first = sorted(data.glob(SEGMENT_GLOB))[0]
    true_sid = int(first.parent.name.split("=", 1)[1])
    wrong = first.parent.parent / "session_id=42"
    wrong.mkdir()
    first.rename(wrong / first.name)

    con = connect(data)
    duck_sids = Counter(dict(duck(con, "SELECT session_id, count(*) FROM session_log GROUP BY 1")))
    spark_sids = Counter(dict(rows(spark_log(spark, data).groupBy("session_id").count())))
    assert 42 not in duck_sids and true_sid in duck_sids
    assert spark_sids == duck_sids

    from materialize.segments_index import find_segments

    moved = [r for r in find_segments(data) if r.path.parent == wrong]
    assert [r.session_id for r in moved] == [true_sid]


def test_the_readme_snippet_runs_and_reads_the_log(spark: SparkSession, data_dir: Path) -> None:
    """The README's Spark snippet, run as written (only the path points at the test data)."""
    import re

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    snippet = next(b for b in blocks if "SparkSession.builder" in b)
    code = snippet.replace('"/var/lib/kalshi/segments"', repr(str(data_dir / "segments")))
    scope: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), scope)
    got = rows(scope["log"].groupBy("date", "session_id").agg(F.count("*")))
    want = rows(
        read_segments(spark, str(data_dir / "segments"))
        .groupBy("date", "session_id")
        .agg(F.count("*"))
    )
    assert got and got == want
