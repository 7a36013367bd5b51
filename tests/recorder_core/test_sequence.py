"""recorder.sequence: per-sid seq verdicts; replies that consume or echo a seq never make a gap,
injected gaps are always reported with the right expected/got."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from recorder.sequence import FIRST, OK, SeqStatus, SeqTracker, SeqVerdict


def test_basic_verdicts() -> None:
    t = SeqTracker()
    assert t.last(2) is None
    assert t.on_data(2, 2) is FIRST  # the snapshot need not be seq 1
    assert t.on_data(2, 3) is OK
    assert t.on_data(2, 6) == SeqVerdict(SeqStatus.GAP, expected=4, got=6)
    assert t.last(2) == 6  # re-anchored: keep recording
    assert t.on_data(2, 7) is OK
    assert t.on_data(2, 7) == SeqVerdict(SeqStatus.STALE, got=7, last=7)
    assert t.on_data(2, 5).is_stale
    assert t.last(2) == 7  # never moved backwards


def test_sids_are_independent() -> None:
    t = SeqTracker()
    assert t.on_data(1, 10) is FIRST
    assert t.on_data(2, 1) is FIRST
    assert t.on_data(1, 11) is OK
    assert t.on_data(2, 2) is OK
    assert t.sids() == [1, 2]


def test_reply_consumes_or_echoes() -> None:
    t = SeqTracker()
    t.on_data(2, 57)
    t.on_reply(2, 58)  # ok consumed 58
    assert t.on_data(2, 59) is OK
    t.on_reply(2, 59)  # echo of the last data seq
    assert t.on_data(2, 60) is OK
    t.on_reply(2, 10)  # old: ignored
    assert t.last(2) == 60


def test_reply_does_not_anchor_and_forget_reset() -> None:
    t = SeqTracker()
    t.on_reply(3, 5)
    assert t.last(3) is None
    assert t.on_data(3, 9) is FIRST
    t.forget(3)
    assert t.on_data(3, 1) is FIRST
    t.reset()
    assert t.last(3) is None and t.sids() == []


@dataclass
class Event:
    sid: int
    kind: str  # "data" | "consume" | "echo"
    skip: int  # data only: seq values silently lost before this frame
    stale: bool  # data only: replay an old seq after this frame


@st.composite
def streams(draw: st.DrawFn) -> list[Event]:
    n_sids = draw(st.integers(1, 3))
    return draw(
        st.lists(
            st.builds(
                Event,
                sid=st.integers(1, n_sids),
                kind=st.sampled_from(["data", "data", "data", "consume", "echo"]),
                skip=st.one_of(st.just(0), st.just(0), st.just(0), st.integers(1, 5)),
                stale=st.booleans() if draw(st.booleans()) else st.just(False),
            ),
            max_size=80,
        )
    )


@settings(max_examples=500, deadline=None)
@given(streams(), st.dictionaries(st.integers(1, 3), st.integers(1, 1000)))
def test_interleaved_stream(events: list[Event], starts: dict[int, int]) -> None:
    """A server model with per-sid counters; replies consume a value or echo the last one."""
    tracker = SeqTracker()
    counter: dict[int, int] = {}  # last seq the server assigned per sid
    anchored: set[int] = set()
    for ev in events:
        sid = ev.sid
        if ev.kind == "data":
            lost = ev.skip if sid in anchored else 0  # no gap can be seen before an anchor
            seq = counter.get(sid, starts.get(sid, 1) - 1) + lost + 1
            counter[sid] = seq
            verdict = tracker.on_data(sid, seq)
            if sid not in anchored:
                assert verdict is FIRST
                anchored.add(sid)
            elif lost:
                assert verdict == SeqVerdict(SeqStatus.GAP, expected=seq - lost, got=seq)
            else:
                assert verdict is OK
            if ev.stale:
                assert tracker.on_data(sid, seq - (ev.skip % 3)).status is SeqStatus.STALE
            assert tracker.last(sid) == seq
        elif ev.kind == "consume":
            seq = counter.get(sid, starts.get(sid, 1) - 1) + 1
            counter[sid] = seq
            tracker.on_reply(sid, seq)
        elif sid in counter:  # echo of the last value (nothing to echo before any)
            tracker.on_reply(sid, counter[sid])
