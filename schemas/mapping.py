"""The mapping from session-log records to table rows, written once, in SQL (DuckDB dialect).

Every statement reads a relation named ``session_log`` with the ``schemas.log.LOG_SCHEMA`` columns.
Two users run the same text:

* ``materialize.loader`` runs :data:`RECORD_SQL` (the tables whose rows each come from one log
  record: lifecycle events, snapshots, deltas, gaps) and :data:`DECISION_SQL` (the session and
  participation rows a segment's decisions open) over each segment in an in-memory DuckDB, and
  COPYs the result. What a segment says of rows an earlier segment opened (a session's end, a
  market's leave) comes from :data:`CARRY_SQL` and is applied as UPDATEs; ``loader.finalize``
  derives what spans sessions (crash ends, restart flags, crash-closed participation, completed
  markets);
* ``materialize.views`` runs :data:`RECORD_SQL` and :data:`LOG_SQL` as views over every sealed
  segment: the same per-record and decision statements over the whole log, plus in SQL what
  ``loader.finalize`` derives. ``tests/materialize/test_session_records.py`` pins the views to
  the loaded tables on every scenario.

Snapshot levels are parsed in SQL with ``schemas.wire.snapshot_levels``' rules and exact decimals
with ``schemas.units``' (digits shifted as text, never a float or a rounding cast): this is the one
second language the project keeps, pinned to the Python by
``tests/analysts/test_views.py::test_snapshot_levels_are_exact_and_match_the_recorder`` and
``test_fixed_point_sql_matches_units``. One known difference: a number written with
non-ASCII digits (which Python's ``Decimal`` accepts and no exchange sends) makes the SQL leave
that snapshot out (both refuse ``_`` digit separators).
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
    LIFECYCLE_EVENTS,
    PARTICIPATION,
    PREVIOUS_ENDED,
    SESSIONS,
    SNAPSHOTS,
    TABLE,
    sql_type,
)
from schemas.units import INT64_MAX
from schemas.wire import DELTA_MSG, LIFECYCLE_MSG_TYPES, SNAPSHOT_MSG

SESSION_LOG = "session_log"
"""The relation every statement here reads: the log records (``LOG_SCHEMA`` columns)."""

GAP_DECISIONS = (Decision.GAP, Decision.STALE_SEQ, Decision.LOSS)
"""Decisions that become ``rl_sequence_gaps`` rows."""
SESSION_DECISIONS = (
    Decision.SESSION_START,
    Decision.SESSION_END,
    Decision.RECOVERED,
    Decision.MARKET_JOINED,
    Decision.MARKET_LEFT,
)
"""Decisions that open and close ``rl_orderbook_sessions`` and ``rl_market_participation`` rows."""

# (format, yes key, no key) in snapshot_levels' order of preference; "cents" is the legacy form.
_SNAPSHOT_FORMATS = (
    ("dollars_fp", "yes_dollars_fp", "no_dollars_fp"),
    ("dollars", "yes_dollars", "no_dollars"),
    ("cents", "yes", "no"),
)


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _in_list(values: tuple[str, ...] | list[str]) -> str:
    return "(" + ", ".join(_lit(v) for v in values) + ")"


def _ts(ns_expr: str) -> str:
    """ns since epoch -> TIMESTAMPTZ, floored to the microsecond.

    Integer arithmetic only, independent of the connection's TimeZone setting."""
    return f"(TIMESTAMPTZ '1970-01-01 00:00:00+00' + to_microseconds(({ns_expr}) // 1000))"


def _jtype(key: str) -> str:
    return f"json_type(p, '$.{key}')"


def _jstr(key: str) -> str:
    """A JSON string field, else NULL."""
    return f"(CASE WHEN {_jtype(key)} = 'VARCHAR' THEN json_extract_string(p, '$.{key}') END)"


def _jint(key: str) -> str:
    """A JSON integer field within BIGINT, else NULL (no bools, no floats)."""
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
    """A JSON array as VARCHAR[] (its items as text), else NULL."""
    return f"(CASE WHEN {_jtype(key)} = 'ARRAY' THEN json_extract_string(p, '$.{key}[*]') END)"


SESSION_LAST_RECORD = "session_last_record"
"""The relation of :data:`LAST_RECORD_SQL`'s rows that :data:`DECISION_SQL` and :data:`CARRY_SQL`
read for ``SESSIONS`` (the views compute it inline)."""
LAST_RECORD_SQL = f"""
SELECT session_id, max(recv_ns) AS last_ns
FROM {SESSION_LOG} WHERE msg_type <> {_lit(Decision.SESSION_END.value)}
GROUP BY session_id"""
"""How far each session's recording went: its last record's receive time. A crash's end marker
is written by the next start, so ``session_end`` records do not count (crash-closed
participation ends there)."""


_REQUIRED: dict[str, str] = {
    Decision.SESSION_START.value: f"{_jtype('lifecycle_mode')} = 'BOOLEAN'",
    Decision.MARKET_JOINED.value: f"{_jstr('market_ticker')} IS NOT NULL",
    Decision.MARKET_LEFT.value: f"{_jstr('market_ticker')} IS NOT NULL",
}
"""What a decision's payload must hold to be used, besides being a JSON object; a record without
it is left out and counted as malformed (``DECISION_FAULTS_SQL``)."""


def _payloads(names: tuple[str, ...] | list[str]) -> str:
    """Decision records of these names, payload as ``p`` (NULL unless a JSON object)."""
    return f"""(
    SELECT session_id, record_seq, recv_ns, conn, epoch, sid, msg_type,
           CASE WHEN json_valid(t) THEN
               CASE WHEN json_type(CAST(t AS JSON)) = 'OBJECT' THEN CAST(t AS JSON) END
           END AS p
    FROM (
        SELECT session_id, record_seq, recv_ns, conn, epoch, sid, msg_type,
               TRY(decode(raw)) AS t
        FROM {SESSION_LOG}
        WHERE kind = {_lit(Kind.DECISION.value)} AND msg_type IN {_in_list(list(names))}
    )
)"""


def _usable(names: tuple[str, ...] | list[str]) -> str:
    """The payload is a JSON object holding what its decision requires (:data:`_REQUIRED`)."""
    whens = " ".join(f"WHEN {_lit(n)} THEN {c}" for n, c in _REQUIRED.items() if n in names)
    need = f"coalesce(CASE msg_type {whens} ELSE true END, false)" if whens else "true"
    return f"(p IS NOT NULL AND {need})"


def _decisions(names: tuple[str, ...] | list[str]) -> str:
    """Decision records of these names whose payload is usable, payload as ``p``."""
    return f"(SELECT * FROM {_payloads(names)} WHERE {_usable(names)})"


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
    limit = f"(CASE WHEN {m}.sign = '-' THEN {INT64_MAX + 1} ELSE {INT64_MAX} END)"
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
        f"{-INT64_MAX - 1} AND {INT64_MAX} THEN CAST({v} AS BIGINT) END)"
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


def _session_ctes(last_record: str) -> str:
    """What a relation's own decisions say of each session: its (last valid) start, its last end,
    what it recovered (in record order); and its last record, read from ``last_record``
    (:data:`LAST_RECORD_SQL`'s rows: a relation name or a parenthesised query)."""
    prev = "json_type(p, '$.previous_session')"
    return f"""
starts AS (
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
    FROM {_decisions([Decision.SESSION_START])}
    QUALIFY row_number() OVER (PARTITION BY session_id ORDER BY record_seq DESC) = 1
),
ends AS (
    SELECT session_id, recv_ns, {_jstr("reason")} AS end_reason
    FROM {_decisions([Decision.SESSION_END])}
    QUALIFY row_number() OVER (PARTITION BY session_id ORDER BY record_seq DESC) = 1
),
found AS (
    SELECT session_id, record_seq,
           CASE WHEN len(coalesce({_jstr_list("sessions")}, [])) > 0 THEN {_jstr_list("sessions")}
                ELSE coalesce({_jstr_list("files")}, []) END AS found
    FROM {_decisions([Decision.RECOVERED])}
),
recovered AS (
    SELECT session_id, CAST(flatten(list(found ORDER BY record_seq)) AS VARCHAR[]) AS found
    FROM found WHERE len(found) > 0
    GROUP BY session_id
),
last_record AS (SELECT session_id, last_ns FROM {last_record})"""


def _session_rows_sql(last_record: str = SESSION_LAST_RECORD) -> str:
    """One row per session started in the relation, with what the relation says of it: the
    specification's vocabulary (both payload shapes the recorder has written), the restart
    columns the recorder wrote (``restart_source = 'recorder'``; else NULL and ``'derived'``),
    its end and last record if they are in the relation too."""
    new_env = _in_list((DISCOVERY_LIFECYCLE, DISCOVERY_REST))
    return f"""
WITH {_session_ctes(last_record)}
SELECT s.session_id,
       {_ts("s.recv_ns")} AS started_at,
       CASE WHEN e.recv_ns IS NOT NULL THEN {_ts("e.recv_ns")} END AS ended_at,
       e.end_reason,
       s.lifecycle_mode,
       CASE WHEN s.env IN {new_env} THEN s.env
            WHEN s.lifecycle_mode THEN {_lit(DISCOVERY_LIFECYCLE)}
            ELSE {_lit(DISCOVERY_REST)} END AS environment,
       s.host,
       s.shard,
       s.version,
       s.config,
       r.found AS recovered_from,
       CASE WHEN s.env IN {new_env} THEN s.exchange_env_new ELSE s.env END AS exchange_env,
       CASE WHEN s.from_recorder THEN s.prev_given END AS restarted,
       CASE WHEN s.from_recorder THEN s.prev_id END AS previous_session_id,
       CASE WHEN s.prev_given THEN
                CASE WHEN s.prev_ended IN {_in_list(PREVIOUS_ENDED)} THEN s.prev_ended
                     ELSE 'unknown' END
            END AS previous_session_ended,
       CASE WHEN s.from_recorder THEN s.prev_end_reason END AS previous_end_reason,
       CASE WHEN s.from_recorder THEN 'recorder' ELSE 'derived' END AS restart_source,
       CASE WHEN l.last_ns IS NOT NULL THEN {_ts("l.last_ns")} END AS last_record_at
FROM starts s
LEFT JOIN ends e USING (session_id)
LEFT JOIN recovered r USING (session_id)
LEFT JOIN last_record l USING (session_id)"""


def _session_carry_sql() -> str:
    """What the relation says of sessions started before it (in an earlier segment): the end,
    what was recovered, the last record. The loader applies these to the rows loaded earlier."""
    return f"""
WITH {_session_ctes(SESSION_LAST_RECORD)},
ids AS (
    SELECT session_id FROM ends
    UNION SELECT session_id FROM recovered
    UNION SELECT session_id FROM last_record
)
SELECT i.session_id,
       CASE WHEN e.recv_ns IS NOT NULL THEN {_ts("e.recv_ns")} END AS ended_at,
       e.recv_ns IS NOT NULL AS ended,
       e.end_reason,
       r.found AS recovered_from,
       CASE WHEN l.last_ns IS NOT NULL THEN {_ts("l.last_ns")} END AS last_record_at
FROM ids i
LEFT JOIN ends e USING (session_id)
LEFT JOIN recovered r USING (session_id)
LEFT JOIN last_record l USING (session_id)
WHERE i.session_id NOT IN (SELECT session_id FROM starts)
ORDER BY i.session_id"""


def _sessions_sql() -> str:
    """One row per run over the whole log, as the loader's rows plus ``loader.finalize`` make
    it: a ``crash`` end inferred for a run another one recovered that has no end of its own, and
    restart flags derived where the recorder did not write them (the previous session is the
    last one it recovered that exists, else the latest earlier one of the same host and
    shard)."""
    return f"""
WITH own AS ({_project(SESSIONS, _session_rows_sql(f"({LAST_RECORD_SQL})"))}),
named AS (  -- (recovering session, recovered session id, position), ids that are numbers only
    SELECT o.session_id, o.started_at, CAST(u.x AS BIGINT) AS other, u.i
    FROM own o, LATERAL (
        SELECT unnest(o.recovered_from) AS x, generate_subscripts(o.recovered_from, 1) AS i) u
    WHERE regexp_full_match(u.x, '-?[0-9]+')
),
inferred AS (
    SELECT n.other AS session_id, min(n.started_at) AS at
    FROM named n JOIN own d ON d.session_id = n.other
    WHERE d.ended_at IS NULL AND n.other <> n.session_id
    GROUP BY n.other
),
ended AS (
    SELECT o.* REPLACE (
               coalesce(o.ended_at, i.at) AS ended_at,
               CASE WHEN o.ended_at IS NOT NULL THEN o.end_reason
                    WHEN i.at IS NOT NULL THEN 'crash' END AS end_reason),
           lag(o.session_id) OVER w AS lag_id
    FROM own o LEFT JOIN inferred i USING (session_id)
    WINDOW w AS (PARTITION BY o.host, o.shard ORDER BY o.started_at, o.session_id)
),
rec_prev AS (  -- the last recovered session that exists
    SELECT n.session_id, arg_max(n.other, n.i) AS prev_id
    FROM named n JOIN own d ON d.session_id = n.other
    GROUP BY n.session_id
),
rec_any AS (SELECT DISTINCT session_id FROM named),
derived AS (
    SELECT e.*, rp.prev_id IS NOT NULL AS prev_recovered,
           coalesce(rp.prev_id, e.lag_id) AS d_prev_id, ra.session_id IS NOT NULL AS any_rec
    FROM ended e LEFT JOIN rec_prev rp USING (session_id) LEFT JOIN rec_any ra USING (session_id)
)
SELECT d.* REPLACE (
       CASE WHEN d.restart_source = 'recorder' THEN d.restarted
            ELSE d.d_prev_id IS NOT NULL OR d.any_rec END AS restarted,
       CASE WHEN d.restart_source = 'recorder' THEN d.previous_session_id
            ELSE d.d_prev_id END AS previous_session_id,
       CASE WHEN d.restart_source = 'recorder' THEN d.previous_session_ended
            WHEN d.d_prev_id IS NULL THEN CASE WHEN d.any_rec THEN 'crash' END
            WHEN d.prev_recovered OR p.end_reason = 'crash' THEN 'crash'
            WHEN p.end_reason IS NULL THEN 'unknown'
            ELSE 'clean' END AS previous_session_ended,
       CASE WHEN d.restart_source = 'recorder' THEN d.previous_end_reason
            ELSE p.end_reason END AS previous_end_reason)
FROM derived d
LEFT JOIN ended p ON p.session_id = d.d_prev_id"""


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


def _participation_ctes() -> str:
    """Joins and leaves of a relation, each join matched with the leave that closes it: a leave
    closes the latest join of that market before it, so each join takes the first leave after it
    unless the market was joined again first (then that later join takes it)."""
    return f"""
joins AS (
    SELECT session_id, record_seq, recv_ns,
           {_jstr("market_ticker")} AS market_ticker,
           coalesce(nullif({_jstr("reason")}, ''), 'unknown') AS join_reason,
           {_jtrue("mid_lifecycle")} AS mid_lifecycle,
           {_jint("late_by_ms")} AS late_by_ms
    FROM {_decisions([Decision.MARKET_JOINED])}
),
joins_next AS (
    SELECT *, lead(record_seq) OVER (
        PARTITION BY session_id, market_ticker ORDER BY record_seq) AS next_join_seq
    FROM joins
),
leaves AS (
    SELECT session_id, record_seq AS leave_seq, recv_ns AS leave_ns,
           {_jstr("market_ticker")} AS market_ticker, {_jstr("reason")} AS leave_reason
    FROM {_decisions([Decision.MARKET_LEFT])}
),
matched AS (
    SELECT j.*, l.leave_seq, l.leave_ns, l.leave_reason,
           coalesce(l.leave_seq < j.next_join_seq, l.leave_seq IS NOT NULL) AS closed
    FROM joins_next j
    ASOF LEFT JOIN leaves l
      ON j.session_id = l.session_id AND j.market_ticker = l.market_ticker
     AND l.leave_seq > j.record_seq
)"""


def _participation_rows_sql() -> str:
    """One row per join in the relation, closed if its leave is in the relation too."""
    return f"""
WITH {_participation_ctes()}
SELECT session_id,
       market_ticker,
       {_ts("recv_ns")} AS joined_at,
       CASE WHEN closed THEN {_ts("leave_ns")} END AS left_at,
       join_reason,
       CASE WHEN closed THEN leave_reason END AS leave_reason,
       mid_lifecycle,
       late_by_ms
FROM matched"""


def _participation_carry_sql() -> str:
    """Leaves that close no join of the relation, in record order: each closes the latest
    participation of its market opened before it (by an earlier segment)."""
    return f"""
WITH {_participation_ctes()}
SELECT l.session_id, l.market_ticker, {_ts("l.leave_ns")} AS left_at, l.leave_reason
FROM leaves l
ANTI JOIN (SELECT session_id, leave_seq FROM matched WHERE closed) m USING (session_id, leave_seq)
ORDER BY l.session_id, l.leave_seq"""


def _participation_sql() -> str:
    """Participation over the whole log: a crashed session's markets still open are closed where
    its recording stopped (as ``loader.finalize`` does), so "which markets are active" never
    counts a dead session's. Reads the ``SESSIONS`` view."""
    return f"""
SELECT r.* REPLACE (
       CASE WHEN r.left_at IS NULL AND s.end_reason = 'crash'
            THEN greatest(r.joined_at, coalesce(s.last_record_at, s.ended_at))
            ELSE r.left_at END AS left_at,
       CASE WHEN r.left_at IS NULL AND s.end_reason = 'crash' THEN 'crash'
            ELSE r.leave_reason END AS leave_reason)
FROM ({DECISION_SQL[PARTICIPATION]}) r LEFT JOIN {SESSIONS} s USING (session_id)"""


_DUCKDB_TYPES: dict[tuple[str, str], str] = {
    (t, c.name): sql_type(c, "duckdb") for t, table in TABLE.items() for c in table.columns
}
"""(table, column) -> the column's declared DuckDB type (``schemas.tables.sql_type``)."""


def _project(table: str, sql: str) -> str:
    """``sql`` with exactly ``table``'s declared columns, in order, in their declared DuckDB
    types (``schemas.tables``): the views and the loaded tables cannot differ in shape."""
    cols = ", ".join(
        f"CAST({c.name} AS {_DUCKDB_TYPES[table, c.name]}) AS {c.name}"
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

DECISION_SQL: dict[str, str] = {
    SESSIONS: _project(SESSIONS, _session_rows_sql()),
    PARTICIPATION: _project(PARTICIPATION, _participation_rows_sql()),
}
"""The rows a relation's own decisions open, as far as the relation alone can tell. The loader
runs these over each segment and carries the rest across segments (:data:`CARRY_SQL`,
``loader.finalize``); the views run them over the whole log and derive the rest in SQL
(:data:`LOG_SQL`)."""

CARRY_SQL: dict[str, str] = {
    SESSIONS: _session_carry_sql(),
    PARTICIPATION: _participation_carry_sql(),
}
"""What a relation says of rows an earlier segment opened: session ends, recoveries and last
records of sessions started before it; leaves of markets joined before it."""

DECISION_FAULTS_SQL = f"""
SELECT msg_type, count(*) AS n
FROM {_payloads(SESSION_DECISIONS)}
WHERE NOT {_usable(SESSION_DECISIONS)}
GROUP BY msg_type"""
"""Per decision name, the :data:`SESSION_DECISIONS` records the mapping leaves out (payload not a
JSON object, or without what :data:`_REQUIRED` asks)."""

LOG_SQL: dict[str, str] = {
    SESSIONS: _project(SESSIONS, _sessions_sql()),
    LIFECYCLE_EVENTS: _project(LIFECYCLE_EVENTS, _lifecycle_sql()),
    PARTICIPATION: _project(PARTICIPATION, _participation_sql()),
    COMPLETED_MARKETS: _project(COMPLETED_MARKETS, _completed_sql()),
}
"""Whole-log tables (views only): ``PARTICIPATION`` reads the ``SESSIONS`` view."""
