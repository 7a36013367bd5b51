"""The mapping from session-log records to table rows, written once, in SQL (DuckDB dialect).

Every statement reads a relation named ``session_log`` with the ``schemas.log.LOG_SCHEMA`` columns.
Two users run the same text:

* ``materialize.loader`` runs :data:`RECORD_SQL` (the tables whose rows each come from one log
  record: lifecycle events, snapshots, deltas, gaps) over each segment in an in-memory DuckDB,
  and COPYs the result;
* ``materialize.views`` runs :data:`RECORD_SQL` and :data:`LOG_SQL` (the tables that span records
  and segments: sessions, participation, completed markets, and lifecycle events with the settled
  rows' settlement values filled in) as views over every sealed segment.

What spans segments is decided incrementally by the loader (``loader._decisions`` and
``loader.finalize``, with UPDATEs of rows loaded earlier) and here over the whole log at once;
``tests/materialize/test_session_records.py`` pins the two to each other on every scenario.

Snapshot levels are parsed in SQL with ``schemas.wire.snapshot_levels``' rules and exact decimals
with ``schemas.units``' (digits shifted as text, never a float or a rounding cast): this is the one
second language the project keeps, pinned to the Python by
``tests/analysts/test_views.py::test_snapshot_levels_are_exact_and_match_the_recorder`` and
``test_fixed_point_sql_matches_units``. One known difference: a number written with ``_``
separators or non-ASCII digits (which Python's ``Decimal`` accepts and no exchange sends) makes the
SQL leave that snapshot out.
"""

from __future__ import annotations

from schemas.log import Decision, Kind
from schemas.tables import (
    COMPLETED_MARKETS,
    DELTAS,
    DISCOVERY_LIFECYCLE,
    DISCOVERY_REST,
    DOCUMENTED_EVENT_TYPES,
    GAPS,
    JSON_TYPES,
    LIFECYCLE_EVENTS,
    PARTICIPATION,
    SESSIONS,
    SNAPSHOTS,
    SQL_TYPES,
    TABLE,
)
from schemas.wire import DELTA_MSG, LIFECYCLE_MSG_TYPES, SNAPSHOT_MSG

SESSION_LOG = "session_log"
"""The relation every statement here reads: the log records (``LOG_SCHEMA`` columns)."""

GAP_DECISIONS = (Decision.GAP, Decision.STALE_SEQ, Decision.LOSS)
"""Decisions that become ``rl_sequence_gaps`` rows."""
_INT64_MAX = 2**63 - 1

# (format, yes key, no key) in snapshot_levels' order of preference; "cents" is the legacy form.
_SNAPSHOT_FORMATS = (
    ("dollars_fp", "yes_dollars_fp", "no_dollars_fp"),
    ("dollars", "yes_dollars", "no_dollars"),
    ("cents", "yes", "no"),
)
_INT64_MAX = 2**63 - 1


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _in_list(values: tuple[str, ...] | list[str]) -> str:
    return "(" + ", ".join(_lit(v) for v in values) + ")"


def _ts(ns_expr: str) -> str:
    """ns since epoch -> TIMESTAMPTZ, floored to the microsecond like ``loader.ns_to_datetime``.

    Integer arithmetic only, independent of the connection's TimeZone setting."""
    return f"(TIMESTAMPTZ '1970-01-01 00:00:00+00' + to_microseconds(({ns_expr}) // 1000))"


def _jtype(key: str) -> str:
    return f"json_type(p, '$.{key}')"


def _jstr(key: str) -> str:
    """A JSON string field, else NULL (``loader._str``)."""
    return f"(CASE WHEN {_jtype(key)} = 'VARCHAR' THEN json_extract_string(p, '$.{key}') END)"


def _jint(key: str) -> str:
    """A JSON integer field within BIGINT, else NULL (``loader._int``: no bools, no floats)."""
    return (
        f"(CASE WHEN {_jtype(key)} IN ('BIGINT', 'UBIGINT') "
        f"THEN TRY_CAST(json_extract_string(p, '$.{key}') AS BIGINT) END)"
    )


def _jtrue(key: str) -> str:
    """``p.get(key) is True``."""
    return (
        f"coalesce({_jtype(key)} = 'BOOLEAN' AND json_extract_string(p, '$.{key}') = 'true', false)"
    )


def _jstr_list(key: str) -> str:
    """A JSON array as VARCHAR[] (``loader._str_list``), else NULL."""
    return f"(CASE WHEN {_jtype(key)} = 'ARRAY' THEN json_extract_string(p, '$.{key}[*]') END)"


def _decisions(names: tuple[str, ...] | list[str]) -> str:
    """Decision records of these names whose payload is a JSON object, payload as ``p``."""
    return f"""(
    SELECT session_id, record_seq, recv_ns, conn, epoch, sid, msg_type, p
    FROM (
        SELECT *, CASE WHEN json_valid(t) THEN
                      CASE WHEN json_type(CAST(t AS JSON)) = 'OBJECT' THEN CAST(t AS JSON) END
                  END AS p
        FROM (
            SELECT session_id, record_seq, recv_ns, conn, epoch, sid, msg_type,
                   TRY(decode(raw)) AS t
            FROM {SESSION_LOG}
            WHERE kind = {_lit(Kind.DECISION.value)} AND msg_type IN {_in_list(list(names))}
        )
    )
    WHERE p IS NOT NULL
)"""


# Python's Decimal() grammar for finite numbers (ASCII digits, no underscores): sign, digits with
# an optional point, optional exponent, surrounding whitespace.
_DECIMAL_RE = r"^[ \t\n\r\f\v]*([+-]?)([0-9]*)(?:\.([0-9]*))?(?:[eE]([+-]?[0-9]+))?[ \t\n\r\f\v]*$"


def _fixed(text: str, places: int) -> str:
    """Decimal text -> exact BIGINT in units of 10**-places, NULL where it is not exact or not
    within int64: the semantics of ``schemas.units.fixed_point`` (digits are shifted as text,
    never through a float or a rounding cast). Like it, the shape the exchange sends
    (``"0.5400"``) takes a fast path; everything else the general one."""
    fast = f"[0-9]{{1,12}}[.][0-9]{{1,{places}}}"
    return f"""(CASE WHEN regexp_full_match({text}, {_lit(fast)})
        THEN CAST(split_part({text}, '.', 1) AS BIGINT) * {10**places}
             + CAST(rpad(split_part({text}, '.', 2), {places}, '0') AS BIGINT)
        ELSE {_fixed_general(text, places)} END)"""


def _fixed_general(text: str, places: int) -> str:
    m = f"regexp_extract({text}, {_lit(_DECIMAL_RE)}, ['sign', 'ip', 'fp', 'ex'])"
    digits = f"({m}.ip || {m}.fp)"
    core = f"trim({digits}, '0')"
    trailing = f"(length(ltrim({digits}, '0')) - length({core}))"
    exp = f"coalesce(TRY_CAST(nullif({m}.ex, '') AS BIGINT), CASE WHEN {m}.ex = '' THEN 0 END)"
    shift = f"({exp} - length({m}.fp) + {trailing} + {places})"
    magnitude = f"CAST({core} || repeat('0', CAST({shift} AS INTEGER)) AS HUGEINT)"
    limit = f"(CASE WHEN {m}.sign = '-' THEN {_INT64_MAX + 1} ELSE {_INT64_MAX} END)"
    signed = f"(CASE WHEN {m}.sign = '-' THEN -{magnitude} ELSE {magnitude} END)"
    return f"""(CASE
        WHEN {text} IS NULL OR NOT regexp_full_match({text}, {_lit(_DECIMAL_RE)}) THEN NULL
        WHEN {digits} = '' THEN NULL
        WHEN {core} = '' THEN 0
        WHEN {exp} IS NULL THEN NULL
        WHEN {shift} < 0 OR length({core}) + {shift} > 19 THEN NULL
        WHEN {magnitude} > {limit} THEN NULL
        ELSE CAST({signed} AS BIGINT) END)"""


def _json_int_scaled(j: str, factor: int) -> str:
    """A JSON integer times ``factor`` within int64, else NULL (legacy cents / whole contracts)."""
    v = f"(TRY_CAST(json_extract_string({j}, '$') AS HUGEINT) * {factor})"
    return (
        f"(CASE WHEN json_type({j}) IN ('BIGINT', 'UBIGINT') AND {v} BETWEEN "
        f"{-_INT64_MAX - 1} AND {_INT64_MAX} THEN CAST({v} AS BIGINT) END)"
    )


def _snapshots_sql() -> str:
    """Levels parsed in SQL with ``schemas.wire.snapshot_levels``' rules: the frame (or its
    ``msg`` / ``orderbook_fp`` / ``orderbook`` object) picks the first format with a side key
    present; a side is null, absent or a list of [price, size] pairs; prices are dollar strings
    (or integer cents in the legacy format), sizes strings or integers; a negative size, a price
    listed twice or an inexact number rejects the whole snapshot (left out, as the loader leaves
    it out); zero sizes are dropped; levels are sorted by price."""
    fmt_case = " ".join(
        f"WHEN json_exists(body, '$.{y}') OR json_exists(body, '$.{n}') THEN '{f}'"
        for f, y, n in _SNAPSHOT_FORMATS
    )

    def side_levels(which: int) -> str:
        whens = " ".join(
            f"WHEN '{f}' THEN json_extract(body, '$.{keys[which]}')"
            for f, *keys in _SNAPSHOT_FORMATS
        )
        return f"CASE fmt {whens} END"

    price = f"""CASE WHEN NOT pair THEN NULL
                     WHEN fmt = 'cents' THEN {_json_int_scaled("pj", 10_000)}
                     WHEN json_type(pj) = 'VARCHAR' THEN {_fixed("pt", 6)}
                END"""
    size = f"""CASE WHEN NOT pair THEN NULL
                    WHEN json_type(sj) = 'VARCHAR' THEN {_fixed("st", 2)}
                    ELSE {_json_int_scaled("sj", 100)}
               END"""
    return f"""
WITH frames AS (
    SELECT session_id, record_seq, recv_ns, conn, epoch, sid, seq, market_ticker,
           TRY(decode(raw)) AS t
    FROM {SESSION_LOG}
    WHERE kind = {_lit(Kind.IN.value)} AND msg_type = {_lit(SNAPSHOT_MSG)}
      AND NOT malformed AND market_ticker IS NOT NULL
),
objs AS (
    SELECT * EXCLUDE (t),
           CASE WHEN json_valid(t) THEN
               CASE WHEN json_type(CAST(t AS JSON)) = 'OBJECT' THEN CAST(t AS JSON) END
           END AS j
    FROM frames
),
bodies AS (
    SELECT * EXCLUDE (j),
           CASE WHEN json_type(j, '$.msg') = 'OBJECT' THEN json_extract(j, '$.msg')
                WHEN json_type(j, '$.orderbook_fp') = 'OBJECT'
                     THEN json_extract(j, '$.orderbook_fp')
                WHEN json_type(j, '$.orderbook') = 'OBJECT' THEN json_extract(j, '$.orderbook')
                ELSE j END AS body
    FROM objs WHERE j IS NOT NULL
),
fmts AS MATERIALIZED (
    SELECT *, CASE {fmt_case} END AS fmt FROM bodies
),
sides AS (
    SELECT session_id, record_seq, fmt, 'yes' AS side, {side_levels(0)} AS levels FROM fmts
    UNION ALL
    SELECT session_id, record_seq, fmt, 'no' AS side, {side_levels(1)} AS levels FROM fmts
),
side_types AS (
    SELECT session_id, record_seq,
           bool_or(coalesce(json_type(levels), 'NULL') NOT IN ('NULL', 'ARRAY')) AS bad
    FROM sides GROUP BY ALL
),
level_rows AS (
    SELECT session_id, record_seq, side, fmt, unnest(json_extract(levels, '$[*]')) AS lv
    FROM sides WHERE json_type(levels) = 'ARRAY'
),
pairs AS (
    SELECT *,
           coalesce(json_type(lv) = 'ARRAY' AND json_array_length(lv) = 2, false) AS pair,
           json_extract(lv, '$[0]') AS pj,
           json_extract(lv, '$[1]') AS sj
    FROM level_rows
),
texts AS (
    SELECT *, json_extract_string(pj, '$') AS pt, json_extract_string(sj, '$') AS st FROM pairs
),
parsed AS (
    SELECT session_id, record_seq, side, {price} AS price, {size} AS size FROM texts
),
per_side AS MATERIALIZED (
    SELECT session_id, record_seq, side,
           bool_or(price IS NULL OR size IS NULL OR size < 0)
               OR count(*) <> count(DISTINCT price) AS bad,
           list(price ORDER BY price) FILTER (WHERE size > 0) AS prices,
           list(size ORDER BY price) FILTER (WHERE size > 0) AS sizes
    FROM parsed GROUP BY ALL
)
SELECT f.session_id, f.record_seq, f.recv_ns, f.conn, f.epoch, f.sid, f.seq, f.market_ticker,
       CAST(coalesce(y.prices, []) AS BIGINT[]) AS yes_prices,
       CAST(coalesce(y.sizes, []) AS BIGINT[]) AS yes_sizes,
       CAST(coalesce(n.prices, []) AS BIGINT[]) AS no_prices,
       CAST(coalesce(n.sizes, []) AS BIGINT[]) AS no_sizes
FROM fmts f
JOIN side_types st USING (session_id, record_seq)
LEFT JOIN per_side y ON y.session_id = f.session_id AND y.record_seq = f.record_seq
                    AND y.side = 'yes'
LEFT JOIN per_side n ON n.session_id = f.session_id AND n.record_seq = f.record_seq
                    AND n.side = 'no'
WHERE NOT st.bad AND NOT coalesce(y.bad, false) AND NOT coalesce(n.bad, false)"""


def _deltas_sql() -> str:
    return f"""
SELECT session_id, record_seq, recv_ns, conn, epoch, sid, seq, market_ticker,
       side, price, delta, ts_ms
FROM {SESSION_LOG}
WHERE kind = {_lit(Kind.IN.value)} AND msg_type = {_lit(DELTA_MSG)} AND NOT malformed
  AND market_ticker IS NOT NULL AND side IS NOT NULL AND price IS NOT NULL
  AND delta IS NOT NULL"""


def _gaps_sql() -> str:
    stale = _lit(Decision.STALE_SEQ.value)
    return f"""
SELECT session_id,
       record_seq,
       recv_ns AS detected_ns,
       CAST(coalesce(TRY_CAST({_jint("conn")} AS SMALLINT), conn) AS SMALLINT) AS conn,
       CAST(coalesce(TRY_CAST({_jint("epoch")} AS INTEGER), epoch) AS INTEGER) AS epoch,
       coalesce({_jint("sid")}, sid) AS sid,
       coalesce({_jint("expected")},
                CASE WHEN msg_type = {stale} THEN TRY({_jint("last")} + 1) END) AS expected_seq,
       {_jint("got")} AS got_seq,
       CAST({_jstr_list("market_tickers")} AS VARCHAR[]) AS market_tickers,
       msg_type AS kind
FROM {_decisions(list(GAP_DECISIONS))}"""


def _sessions_sql() -> str:
    """One row per run, as ``loader`` + ``loader.finalize`` build it: the specification's
    vocabulary, a ``crash`` end inferred for a run another one recovered, restart flags (from the
    recorder's ``previous_session`` or derived), and where the recording stopped."""
    starts = _decisions([Decision.SESSION_START])
    ends = _decisions([Decision.SESSION_END])
    recovered = _decisions([Decision.RECOVERED])
    new_env = _in_list((DISCOVERY_LIFECYCLE, DISCOVERY_REST))
    prev = "json_type(p, '$.previous_session')"
    return f"""
WITH starts AS (
    SELECT session_id, recv_ns,
           json_extract_string(p, '$.lifecycle_mode') = 'true' AS lifecycle_mode,
           {_jstr("environment")} AS env,
           {_jstr("exchange_env")} AS exchange_env_new,
           {_jstr("host")} AS host,
           {_jstr("shard")} AS shard,
           {_jstr("version")} AS version,
           CASE WHEN coalesce({_jtype("config")}, 'NULL') <> 'NULL'
                THEN json_extract(p, '$.config') END AS config,
           {prev} IS NOT NULL AS from_recorder,
           coalesce({prev} = 'OBJECT', false) AS prev_given,
           CASE WHEN json_type(p, '$.previous_session.session_id') IN ('BIGINT', 'UBIGINT')
                THEN TRY_CAST(json_extract_string(p, '$.previous_session.session_id') AS BIGINT)
                END AS prev_id,
           {_jstr("previous_session.ended")} AS prev_ended,
           {_jstr("previous_session.end_reason")} AS prev_end_reason
    FROM {starts}
    WHERE {_jtype("lifecycle_mode")} = 'BOOLEAN'
    QUALIFY row_number() OVER (PARTITION BY session_id ORDER BY record_seq DESC) = 1
),
ends AS (
    SELECT session_id, recv_ns, {_jstr("reason")} AS end_reason
    FROM {ends}
    QUALIFY row_number() OVER (PARTITION BY session_id ORDER BY record_seq DESC) = 1
),
found AS (
    SELECT session_id, record_seq,
           CASE WHEN len(coalesce({_jstr_list("sessions")}, [])) > 0 THEN {_jstr_list("sessions")}
                ELSE coalesce({_jstr_list("files")}, []) END AS found
    FROM {recovered}
),
recovered AS (
    SELECT session_id, flatten(list(found ORDER BY record_seq)) AS recovered_from
    FROM found WHERE len(found) > 0
    GROUP BY session_id
),
last_record AS (
    SELECT session_id, max(recv_ns) AS last_ns
    FROM {SESSION_LOG} WHERE msg_type <> {_lit(Decision.SESSION_END.value)}
    GROUP BY session_id
),
base AS (
    SELECT s.*, e.recv_ns AS end_ns, e.end_reason, r.recovered_from
    FROM starts s LEFT JOIN ends e USING (session_id) LEFT JOIN recovered r USING (session_id)
),
named AS (  -- (recovering session, recovered session id, position), ids that are numbers only
    SELECT b.session_id, b.recv_ns, CAST(u.x AS BIGINT) AS other, u.i
    FROM base b, LATERAL (
        SELECT unnest(b.recovered_from) AS x, generate_subscripts(b.recovered_from, 1) AS i) u
    WHERE regexp_full_match(u.x, '-?[0-9]+')
),
inferred AS (  -- a run another one recovered, with no end of its own: a crash
    SELECT n.other AS session_id, min(n.recv_ns) AS at_ns
    FROM named n JOIN base d ON d.session_id = n.other
    WHERE d.end_ns IS NULL AND n.other <> n.session_id
    GROUP BY n.other
),
ended AS (
    SELECT b.*,
           coalesce(b.end_ns, i.at_ns) AS ended_ns,
           CASE WHEN b.end_ns IS NOT NULL THEN b.end_reason
                WHEN i.at_ns IS NOT NULL THEN 'crash' END AS final_reason,
           lag(b.session_id) OVER w AS lag_id,
           lag(b.end_ns) OVER w AS lag_end_ns
    FROM base b LEFT JOIN inferred i USING (session_id)
    WINDOW w AS (PARTITION BY b.host, b.shard ORDER BY b.recv_ns, b.session_id)
),
rec_prev AS (  -- the last recovered session that exists
    SELECT n.session_id, arg_max(n.other, n.i) AS prev_id
    FROM named n JOIN base d ON d.session_id = n.other
    GROUP BY n.session_id
),
rec_any AS (SELECT DISTINCT session_id FROM named),
derived AS (
    SELECT e.*, coalesce(rp.prev_id, e.lag_id) AS d_prev_id, ra.session_id IS NOT NULL AS any_rec
    FROM ended e LEFT JOIN rec_prev rp USING (session_id) LEFT JOIN rec_any ra USING (session_id)
)
SELECT d.session_id,
       {_ts("d.recv_ns")} AS started_at,
       CASE WHEN d.ended_ns IS NOT NULL THEN {_ts("d.ended_ns")} END AS ended_at,
       d.final_reason AS end_reason,
       d.lifecycle_mode,
       CASE WHEN d.env IN {new_env} THEN d.env
            WHEN d.lifecycle_mode THEN {_lit(DISCOVERY_LIFECYCLE)}
            ELSE {_lit(DISCOVERY_REST)} END AS environment,
       d.host,
       d.shard,
       d.version,
       d.config,
       CAST(d.recovered_from AS VARCHAR[]) AS recovered_from,
       CASE WHEN d.env IN {new_env} THEN d.exchange_env_new ELSE d.env END AS exchange_env,
       CASE WHEN d.from_recorder THEN d.prev_given
            ELSE d.d_prev_id IS NOT NULL OR d.any_rec END AS restarted,
       CASE WHEN d.from_recorder THEN d.prev_id ELSE d.d_prev_id END AS previous_session_id,
       CASE WHEN d.from_recorder THEN
                CASE WHEN NOT d.prev_given THEN NULL
                     WHEN d.prev_ended IN ('clean', 'crash', 'unknown') THEN d.prev_ended
                     ELSE 'unknown' END
            WHEN d.d_prev_id IS NULL THEN CASE WHEN d.any_rec THEN 'crash' END
            WHEN list_contains(d.recovered_from, CAST(d.d_prev_id AS VARCHAR))
                 OR p.final_reason = 'crash' THEN 'crash'
            WHEN p.final_reason IS NULL THEN 'unknown'
            ELSE 'clean' END AS previous_session_ended,
       CASE WHEN d.from_recorder THEN d.prev_end_reason
            WHEN d.d_prev_id IS NOT NULL THEN p.final_reason END AS previous_end_reason,
       CASE WHEN d.from_recorder THEN 'recorder' ELSE 'derived' END AS restart_source,
       CASE WHEN l.last_ns IS NOT NULL THEN {_ts("l.last_ns")} END AS last_record_at
FROM derived d
LEFT JOIN ended p ON p.session_id = d.d_prev_id
LEFT JOIN last_record l ON l.session_id = d.session_id"""


def _lifecycle_sql() -> str:
    """Every lifecycle event; a ``settled`` row without its own settlement value carries the one
    the market's last determination brought (as ``loader.finalize`` fills it)."""
    price = "settlement_price"
    det_price = f"CASE WHEN event_type = 'determined' THEN {price} END"
    cols = (
        "session_id, record_seq, market_ticker, event_type, event_type_documented, "
        "event_timestamp_ms, open_ts, close_ts, determination_ts, settled_ts, result"
    )
    return f"""
SELECT {cols},
       CASE WHEN event_type = 'settled' AND {price} IS NULL
            THEN last_value({det_price} IGNORE NULLS) OVER (
                PARTITION BY market_ticker ORDER BY session_id, record_seq
                ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
            ELSE {price} END AS settlement_price,
       raw, created_at
FROM ({_lifecycle_raw_sql()})"""


def _completed_sql() -> str:
    """``rl_session_completed_markets`` as ``loader.completed_markets`` builds it: a session
    recorded the market's ``created`` and then its ``determined``; a ``settled`` came after (same
    or later session); result and value follow the last determination."""
    ev = f"(SELECT * FROM ({_lifecycle_raw_sql()}) WHERE event_type IN " + (
        "('created', 'determined', 'settled'))"
    )
    return f"""
WITH ev AS {ev},
created AS (
    SELECT session_id, market_ticker, record_seq AS c_seq, created_at
    FROM ev WHERE event_type = 'created'
    QUALIFY row_number() OVER (PARTITION BY session_id, market_ticker ORDER BY record_seq) = 1
),
det AS (
    SELECT c.*, e.record_seq AS d_seq, e.created_at AS determined_at
    FROM created c JOIN ev e
      ON e.session_id = c.session_id AND e.market_ticker = c.market_ticker
     AND e.event_type = 'determined' AND e.record_seq > c.c_seq
    QUALIFY row_number() OVER (
        PARTITION BY c.session_id, c.market_ticker ORDER BY e.record_seq) = 1
),
settled AS (
    SELECT d.*, e.session_id AS settled_session_id, e.created_at AS settled_at,
           e.settled_ts, e.settlement_price AS settled_price
    FROM det d JOIN ev e
      ON e.market_ticker = d.market_ticker AND e.event_type = 'settled'
     AND (e.session_id > d.session_id OR (e.session_id = d.session_id AND e.record_seq > d.d_seq))
    QUALIFY row_number() OVER (
        PARTITION BY d.session_id, d.market_ticker ORDER BY e.session_id, e.record_seq) = 1
),
last_det AS (
    SELECT market_ticker, result, determination_ts FROM ev WHERE event_type = 'determined'
    QUALIFY row_number() OVER (
        PARTITION BY market_ticker ORDER BY session_id DESC, record_seq DESC) = 1
),
last_price AS (
    SELECT market_ticker, settlement_price FROM ev
    WHERE event_type = 'determined' AND settlement_price IS NOT NULL
    QUALIFY row_number() OVER (
        PARTITION BY market_ticker ORDER BY session_id DESC, record_seq DESC) = 1
)
SELECT s.session_id, s.market_ticker, s.created_at, s.determined_at, s.settled_at,
       l.determination_ts, s.settled_ts, l.result,
       coalesce(p.settlement_price, s.settled_price) AS settlement_price,
       s.settled_session_id
FROM settled s
JOIN last_det l USING (market_ticker)
LEFT JOIN last_price p USING (market_ticker)"""


def _lifecycle_raw_sql() -> str:
    own = (
        "CASE WHEN event_type = 'settled' THEN coalesce(settled_ts, determination_ts) "
        "ELSE coalesce(determination_ts, settled_ts) END"
    )
    return f"""
SELECT session_id,
       record_seq,
       market_ticker,
       event_type,
       event_type IN {_in_list(DOCUMENTED_EVENT_TYPES)} AS event_type_documented,
       coalesce(TRY(({own}) * 1000), recv_ns // 1000000) AS event_timestamp_ms,
       open_ts,
       close_ts,
       determination_ts,
       settled_ts,
       result,
       CASE WHEN abs(settlement_value) < 1000000000000000000
            THEN CAST(CAST(settlement_value AS DECIMAL(18, 0)) * CAST(0.000001 AS DECIMAL(7, 6))
                      AS DECIMAL(18, 6)) END AS settlement_price,
       coalesce(replace(TRY(decode(raw)), chr(0), chr(65533)), CAST(raw AS VARCHAR)) AS raw,
       {_ts("recv_ns")} AS created_at
FROM {SESSION_LOG}
WHERE kind = {_lit(Kind.IN.value)} AND msg_type IN {_in_list(LIFECYCLE_MSG_TYPES)}
  AND event_type IS NOT NULL AND market_ticker IS NOT NULL"""


def _participation_sql() -> str:
    joins = _decisions([Decision.MARKET_JOINED])
    leaves = _decisions([Decision.MARKET_LEFT])
    # A leave closes the latest join of that market before it: each join takes the first leave
    # after it, unless the market was joined again first (then that later join takes it).
    return f"""
WITH joins AS (
    SELECT session_id, record_seq, recv_ns,
           {_jstr("market_ticker")} AS market_ticker,
           coalesce(nullif({_jstr("reason")}, ''), 'unknown') AS join_reason,
           {_jtrue("mid_lifecycle")} AS mid_lifecycle,
           {_jint("late_by_ms")} AS late_by_ms
    FROM {joins}
    WHERE {_jstr("market_ticker")} IS NOT NULL
),
joins_next AS (
    SELECT *, lead(record_seq) OVER (
        PARTITION BY session_id, market_ticker ORDER BY record_seq) AS next_join_seq
    FROM joins
),
leaves AS (
    SELECT session_id, record_seq AS leave_seq, recv_ns AS leave_ns,
           {_jstr("market_ticker")} AS market_ticker, {_jstr("reason")} AS leave_reason
    FROM {leaves}
    WHERE {_jstr("market_ticker")} IS NOT NULL
),
matched AS (
    SELECT j.*, l.leave_seq, l.leave_ns, l.leave_reason
    FROM joins_next j
    ASOF LEFT JOIN leaves l
      ON j.session_id = l.session_id AND j.market_ticker = l.market_ticker
     AND l.leave_seq > j.record_seq
),
parts AS (
    SELECT session_id,
           market_ticker,
           {_ts("recv_ns")} AS joined_at,
           CASE WHEN leave_seq IS NOT NULL AND (next_join_seq IS NULL OR leave_seq < next_join_seq)
                THEN {_ts("leave_ns")} END AS left_at,
           join_reason,
           CASE WHEN leave_seq IS NOT NULL AND (next_join_seq IS NULL OR leave_seq < next_join_seq)
                THEN leave_reason END AS leave_reason,
           mid_lifecycle,
           late_by_ms
    FROM matched
)
-- A crashed session's markets still open are closed where its recording stopped (as
-- loader.finalize does): "which markets are active" never counts a dead session's.
SELECT r.session_id,
       r.market_ticker,
       r.joined_at,
       CASE WHEN r.left_at IS NULL AND s.end_reason = 'crash'
            THEN greatest(r.joined_at, coalesce(s.last_record_at, s.ended_at))
            ELSE r.left_at END AS left_at,
       r.join_reason,
       CASE WHEN r.left_at IS NULL AND s.end_reason = 'crash' THEN 'crash'
            ELSE r.leave_reason END AS leave_reason,
       r.mid_lifecycle,
       r.late_by_ms
FROM parts r LEFT JOIN {SESSIONS} s USING (session_id)"""


def _project(table: str, sql: str) -> str:
    """``sql`` with exactly ``table``'s declared columns, in order, in their declared DuckDB
    types (``schemas.tables``): the views and the loaded tables cannot differ in shape."""
    cols = ", ".join(
        f"CAST({c.name} AS {JSON_TYPES['duckdb'] if c.json else SQL_TYPES['duckdb'][c.type]}) "
        f"AS {c.name}"
        for c in TABLE[table].columns
    )
    return f"SELECT {cols} FROM ({sql})"


RECORD_SQL: dict[str, str] = {
    LIFECYCLE_EVENTS: _project(LIFECYCLE_EVENTS, _lifecycle_raw_sql()),
    SNAPSHOTS: _project(SNAPSHOTS, _snapshots_sql()),
    DELTAS: _project(DELTAS, _deltas_sql()),
    GAPS: _project(GAPS, _gaps_sql()),
}
"""Per-record tables: each row comes from one log record, so a segment maps on its own."""

LOG_SQL: dict[str, str] = {
    SESSIONS: _project(SESSIONS, _sessions_sql()),
    LIFECYCLE_EVENTS: _project(LIFECYCLE_EVENTS, _lifecycle_sql()),
    PARTICIPATION: _project(PARTICIPATION, _participation_sql()),
    COMPLETED_MARKETS: _project(COMPLETED_MARKETS, _completed_sql()),
}
"""Whole-log tables (views only): ``PARTICIPATION`` reads the ``SESSIONS`` view."""
