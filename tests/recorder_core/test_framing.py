"""The reader's frame splitter (``recorder.framing``): whole frames out of any chunking.

The reference is websockets' own parser (``websockets.frames.Frame.serialize`` builds the stream,
so the encoding is not ours either). Pure: no sockets (the connection's use of it is tested over
real sockets in tests/recorder/test_fast_path.py).
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode

from recorder.framing import FrameSplitter

FAST = [Opcode.TEXT, Opcode.BINARY]
OTHER = [Opcode.PING, Opcode.PONG, Opcode.CLOSE]


def wire(f: Frame, mask: bool = False) -> bytes:
    if f.rsv1:  # websockets refuses to build this one: build it clean, then set RSV1
        clean = Frame(f.opcode, f.data, fin=f.fin).serialize(mask=mask)
        return bytes([clean[0] | 0x40]) + clean[1:]
    return f.serialize(mask=mask)


lengths = st.sampled_from([0, 1, 125, 126, 127, 65535, 65536, 70000]) | st.integers(0, 300)


@st.composite
def frames(draw: Any) -> tuple[Frame, bool]:
    kind = draw(st.sampled_from(["fast", "control", "fragment", "masked", "rsv"]))
    n = draw(lengths)
    data = bytes([draw(st.integers(0, 255))]) * n
    if kind == "fast":
        return Frame(draw(st.sampled_from(FAST)), data), False
    if kind == "control":
        return Frame(draw(st.sampled_from(OTHER)), data[:125]), False
    if kind == "fragment":
        op = draw(st.sampled_from([Opcode.TEXT, Opcode.CONT]))
        return Frame(op, data, fin=draw(st.booleans()) if op is Opcode.CONT else False), False
    if kind == "masked":
        return Frame(Opcode.TEXT, data), True
    return Frame(Opcode.BINARY, data, rsv1=True), False  # serialized by wire() below


def chunked(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(stream) + 1) for c in cuts})
    out, prev = [], 0
    for p in [*points, len(stream)]:
        out.append(stream[prev:p])
        prev = p
    return [c for c in out if c]


@given(
    st.lists(frames(), max_size=12),
    st.lists(st.integers(0, 10**6), max_size=20),
    st.none() | st.integers(1, 4),
)
def test_every_frame_comes_out_once_in_order(
    fs: list[tuple[Frame, bool]], cuts: list[int], limit: int | None
) -> None:
    """However the stream is cut into reads, and however few frames a call may handle (the
    rest comes on ``feed(b"")`` while ``more``), every frame comes out once, in order."""
    stream = b"".join(wire(f, m) for f, m in fs)
    events: list[tuple[str, bytes]] = []

    def other(w: bytes) -> bool:
        events.append(("other", w))
        return True

    splitter = FrameSplitter()

    def data(p: bytes) -> None:
        events.append(("data", p))

    for i, chunk in enumerate(chunked(stream, cuts)):
        assert splitter.feed(chunk, data, other, limit) == b""
        while splitter.more and i % 2:  # even reads arrive before the last one's turns ran
            assert splitter.feed(b"", data, other, limit) == b""
    while splitter.more:
        assert splitter.feed(b"", data, other, limit) == b""
    assert splitter.buffered == 0
    expected = []
    for f, m in fs:
        simple = f.opcode in FAST and f.fin and not f.rsv1 and not m
        expected.append(("data", f.data) if simple else ("other", wire(f, m)))
    if any(m for _, m in fs):  # masks are random: compare kinds and lengths there
        assert [(k, len(b)) for k, b in events] == [(k, len(b)) for k, b in expected]
    else:
        assert events == expected


@given(st.integers(0, 5), st.integers(1, 200))
def test_stopping_hands_back_everything_after_the_frame(before: int, cut: int) -> None:
    """``on_other`` saying stop: the bytes after that frame come back whole, none kept."""
    head = b"".join(wire(Frame(Opcode.TEXT, b"x" * i)) for i in range(before))
    stop_at = wire(Frame(Opcode.TEXT, b"part", fin=False))
    tail = wire(Frame(Opcode.CONT, b"rest")) + wire(Frame(Opcode.TEXT, b"after"))
    stream = head + stop_at + tail
    splitter = FrameSplitter()
    seen: list[bytes] = []
    others: list[bytes] = []

    def stop(w: bytes) -> bool:
        others.append(w)
        return False

    first, second = stream[: min(cut, len(stream))], stream[min(cut, len(stream)) :]
    rest = splitter.feed(first, seen.append, stop)
    if not others:
        rest = splitter.feed(second, seen.append, stop)
    else:
        rest += second
    assert others == [stop_at]
    assert rest == tail
    assert seen == [b"x" * i for i in range(before)]
    assert splitter.buffered == 0


def test_a_large_frame_in_many_reads_comes_out_whole() -> None:
    """A frame much larger than a read is held in pieces (joined once, not on every read)."""
    payload = bytes(range(256)) * 12_000  # ~3 MB
    stream = wire(Frame(Opcode.TEXT, payload)) + wire(Frame(Opcode.TEXT, b"next"))
    splitter = FrameSplitter()
    seen: list[bytes] = []
    step = 4096
    for i in range(0, len(stream), step):
        splitter.feed(stream[i : i + step], seen.append, lambda w: True)
        if not seen:
            assert splitter.buffered == min(i + step, len(stream))
    assert seen == [payload, b"next"]
    assert splitter.buffered == 0
