"""The sans-IO QGA codec, with plain byte strings (no trio, no sockets).

Every scenario is fed whole, split at every byte position, and byte by byte:
the events, the final state and the need to sync must not depend on how the
bytes were chunked.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gagent.errors import ConnectionLost, ProtocolError, ReplyTooLarge, UsageError
from gagent.protocol import (
    DEFAULT_MAX_REPLY_SIZE,
    NEED_DATA,
    REPLY_SIZE_FLOORS,
    SENTINEL,
    Closed,
    ErrorReply,
    QGAConnection,
    Reply,
    State,
    SyncReply,
    encode_command,
)

SYNC_ID = 7
#: Exactly what qemu-ga 7.2 writes for the 0xFF we send before a sync.
STRAY = b'{"error": {"class": "GenericError", "desc": "JSON parse error, stray \'\\uFFFD\'"}}\n'
OUR_SYNC = b'\xff{"return": 7}\n'


# ------------------------------------------------------------------ helpers


def splits(data: bytes) -> Iterator[list[bytes]]:
    """The data whole, cut in two at every position, and one byte at a time."""
    yield [data]
    for i in range(len(data) + 1):
        yield [data[:i], data[i:]]
    yield [data[i : i + 1] for i in range(len(data))]


@dataclass
class Outcome:
    events: list[object]
    error: tuple[type[BaseException], str] | None
    state: State
    needs_sync: bool
    stale: int


def drive(conn: QGAConnection, chunks: list[bytes], *, eof: bool = False) -> Outcome:
    """Feed chunks, draining events after each; stop at the first exception."""
    events: list[object] = []
    error = None
    feed = [chunk for chunk in chunks if chunk]  # b"" would mean EOF
    if eof:
        feed.append(b"")
    try:
        for chunk in feed:
            conn.receive_data(chunk)
            while True:
                event = conn.next_event()
                if event is NEED_DATA:
                    break
                events.append(event)
                if isinstance(event, Closed):
                    return Outcome(
                        events, None, conn.state, conn.needs_sync, conn.stale_replies_dropped
                    )
    except ProtocolError as exc:
        error = (type(exc), str(exc))
    return Outcome(events, error, conn.state, conn.needs_sync, conn.stale_replies_dropped)


def synced(**kwargs: int) -> QGAConnection:
    conn = QGAConnection(**kwargs)
    conn.send_sync(1)
    conn.receive_data(b'\xff{"return": 1}\n')
    assert conn.next_event() == SyncReply(1)
    assert not conn.needs_sync
    return conn


def syncing() -> QGAConnection:
    conn = QGAConnection()
    conn.send_sync(SYNC_ID)
    return conn


def sent(name: str = "guest-ping") -> Callable[[], QGAConnection]:
    def make() -> QGAConnection:
        conn = synced()
        conn.send_command(name)
        return conn

    return make


def assert_split_invariant(
    make: Callable[[], QGAConnection], data: bytes, *, eof: bool = False
) -> Outcome:
    reference = drive(make(), [data], eof=eof)
    for chunks in splits(data):
        outcome = drive(make(), chunks, eof=eof)
        assert outcome == reference, chunks
    return reference


# --------------------------------------------------------- every reply kind


UNICODE = "héllo wörld ☃ 𝄞 日本語"

CASES = {
    # name: (connection factory, bytes, expected events, needs_sync after, stale dropped)
    "return": (sent(), b'{"return": {}}\n', [Reply({})], False, 0),
    "return-unicode": (
        sent("guest-get-host-name"),
        json.dumps({"return": {"host-name": UNICODE}}, ensure_ascii=False).encode() + b"\n",
        [Reply({"host-name": UNICODE})],
        False,
        0,
    ),
    "return-escaped-unicode": (
        sent(),
        json.dumps({"return": UNICODE}).encode() + b"\n",
        [Reply(UNICODE)],
        False,
        0,
    ),
    "blank-lines-before-reply": (
        sent(),
        b"\n\n  \r\n\t\n" + b'{"return": 3}\n',
        [Reply(3)],
        False,
        0,
    ),
    "error": (
        sent("guest-fsfreeze-freeze"),
        b'{"error": {"class": "CommandNotFound", '
        b'"desc": "Command guest-fsfreeze-freeze has been disabled"}}\n',
        [
            ErrorReply(
                {
                    "class": "CommandNotFound",
                    "desc": "Command guest-fsfreeze-freeze has been disabled",
                }
            )
        ],
        True,  # qemu-ga may write a second error reply: sync first
        0,
    ),
    "return-then-extra-bytes": (sent(), b'{"return": 1}\n{"return": 2}\n', [Reply(1)], True, 0),
    "sync": (syncing, OUR_SYNC, [SyncReply(SYNC_ID)], False, 0),
    "sync-stray-parse-error-line-first": (
        syncing,
        STRAY + OUR_SYNC,
        [SyncReply(SYNC_ID)],
        False,
        0,
    ),
    "sync-stale-sync-reply-first": (
        syncing,
        b'\xff{"return": 5}\n' + STRAY + OUR_SYNC,
        [SyncReply(SYNC_ID)],
        False,
        1,
    ),
    "sync-garbage-before-sentinel": (
        syncing,
        b'garbage {"return": [}\x00\x01\x7f\n{"return": 99}\n' + OUR_SYNC,
        [SyncReply(SYNC_ID)],
        False,
        0,
    ),
    "sync-stale-unicode-replies-first": (
        syncing,
        json.dumps({"return": UNICODE}, ensure_ascii=False).encode() + b"\n" + STRAY + OUR_SYNC,
        [SyncReply(SYNC_ID)],
        False,
        0,
    ),
    "sync-truncated-line-then-sentinel": (
        syncing,
        b'{"return": {"half": "a rep' + OUR_SYNC,
        [SyncReply(SYNC_ID)],
        False,
        0,
    ),
    "sync-sentinel-truncated-line-sentinel": (
        syncing,
        b'\xff{"return": 5' + OUR_SYNC,
        [SyncReply(SYNC_ID)],
        False,
        0,
    ),
    "sync-noise-line-after-sentinel": (
        syncing,
        b"\xffnot json at all\n" + OUR_SYNC,
        [SyncReply(SYNC_ID)],
        False,
        1,
    ),
    "sync-id-must-be-an-int": (
        syncing,
        b'\xff{"return": 7.0}\n\xff{"return": "7"}\n' + OUR_SYNC,
        [SyncReply(SYNC_ID)],
        False,
        2,
    ),
    "sync-blank-lines": (
        syncing,
        b"\n\n\xff\n\n" + b'{"return": 7}\n',
        [SyncReply(SYNC_ID)],
        False,
        0,
    ),
    "sync-then-extra-bytes": (
        syncing,
        OUR_SYNC + b'{"return": "unasked"}\n',
        [SyncReply(SYNC_ID)],
        True,
        0,
    ),
    "sync-then-a-later-sentinel": (syncing, OUR_SYNC + b"\xff", [SyncReply(SYNC_ID)], True, 0),
    "sync-incomplete": (syncing, STRAY + b'\xff{"return": 7}', [], True, 0),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_reply_kinds_split_at_every_byte(case: str) -> None:
    make, data, events, needs_sync, stale = CASES[case]
    outcome = assert_split_invariant(make, data)
    assert outcome.error is None
    assert outcome.events == events
    assert outcome.needs_sync is needs_sync
    assert outcome.stale == stale
    if events:
        assert outcome.state is State.IDLE


def test_stray_line_from_qemu_ga_is_a_json_error_line() -> None:
    # sanity: the fixture is what qemu-ga 7.2 writes (measured)
    assert json.loads(STRAY) == {
        "error": {"class": "GenericError", "desc": "JSON parse error, stray '\ufffd'"}
    }


def test_after_a_sync_a_command_gets_its_reply() -> None:
    conn = syncing()
    conn.receive_data(STRAY + OUR_SYNC)
    assert conn.next_event() == SyncReply(SYNC_ID)
    assert conn.send_command("guest-ping") == b'{"execute":"guest-ping"}\n'
    assert conn.state is State.AWAIT_REPLY
    conn.receive_data(b'{"return": {}}\n')
    assert conn.next_event() == Reply({})
    assert conn.state is State.IDLE
    assert conn.next_event() is NEED_DATA


def test_send_sync_frames_with_sentinel() -> None:
    conn = QGAConnection()
    data = conn.send_sync(12345)
    assert data.startswith(SENTINEL)
    assert json.loads(data[1:]) == {"execute": "guest-sync-delimited", "arguments": {"id": 12345}}
    assert conn.state is State.AWAIT_SYNC
    assert conn.needs_sync


def test_new_connection_needs_sync() -> None:
    assert QGAConnection().needs_sync


# ------------------------------------------------------------------- Closed


@pytest.mark.parametrize(
    ("make", "data"),
    [
        (sent(), b'{"return": {"half'),
        (sent(), b""),
        (sent(), b"\n\n"),
        (syncing, b'garbage {"return"'),
        (syncing, STRAY + b'\xff{"return": 7'),
    ],
    ids=["mid-reply", "before-reply", "after-blank-lines", "sync-before-sentinel", "sync-mid"],
)
def test_eof_mid_reply_is_closed(make: Callable[[], QGAConnection], data: bytes) -> None:
    outcome = assert_split_invariant(make, data, eof=True)
    assert outcome.error is None
    assert outcome.events == [Closed()]
    assert outcome.state is State.CLOSED


def test_closed_connection_refuses_to_send() -> None:
    conn = sent()()
    conn.receive_data(b"")
    assert conn.next_event() == Closed()
    assert conn.next_event() == Closed()  # stays closed
    with pytest.raises(ConnectionLost) as info:
        conn.send_command("guest-info")
    assert info.value.command == "guest-info"
    with pytest.raises(ConnectionLost):
        conn.send_sync(3)
    conn.abandon()  # no effect once closed
    assert conn.state is State.CLOSED


def test_complete_reply_before_eof_is_delivered_first() -> None:
    outcome = assert_split_invariant(sent(), b'{"return": 5}\n', eof=True)
    assert outcome.events == [Reply(5), Closed()]
    conn = sent()()
    conn.receive_data(b'{"return": 5}\n')
    conn.receive_data(b"")
    assert conn.next_event() == Reply(5)
    assert conn.next_event() == Closed()
    assert conn.state is State.CLOSED


def test_eof_while_idle() -> None:
    conn = synced()
    conn.receive_data(b"")
    assert conn.next_event() == Closed()


# --------------------------------------------------------------- too large

LIMIT = 64


def _reply_of_line_length(length: int) -> bytes:
    """A ``{"return": "aaa"}`` line of exactly ``length`` bytes, plus its newline."""
    line = b'{"return": "' + b"a" * (length - 14) + b'"}'
    assert len(line) == length
    return line + b"\n"


def _sent_limited() -> QGAConnection:
    conn = synced(max_reply_size=LIMIT)
    conn.send_command("guest-file-read", {"handle": 1})
    return conn


def test_reply_at_the_limit_is_accepted_however_chunked() -> None:
    outcome = assert_split_invariant(_sent_limited, _reply_of_line_length(LIMIT))
    assert outcome.error is None
    assert outcome.events == [Reply("a" * (LIMIT - 14))]


@pytest.mark.parametrize("length", [LIMIT + 1, LIMIT * 3])
def test_reply_over_the_limit_is_too_large_however_chunked(length: int) -> None:
    outcome = assert_split_invariant(_sent_limited, _reply_of_line_length(length))
    assert outcome.error is not None
    assert outcome.error[0] is ReplyTooLarge
    assert outcome.events == []
    assert outcome.state is State.IDLE
    assert outcome.needs_sync


def test_too_large_then_sync_discards_the_rest_with_bounded_memory() -> None:
    conn = _sent_limited()
    conn.receive_data(b'{"return": "' + b"a" * 100)
    with pytest.raises(ReplyTooLarge) as info:
        conn.next_event()
    assert info.value.limit == LIMIT
    assert info.value.command == "guest-file-read"
    assert "guest-file-read" in str(info.value)
    assert conn.state is State.IDLE and conn.needs_sync
    assert len(conn._buffer) == 0

    # The rest of the huge reply keeps streaming in while we sync: 8 MiB in
    # 64 KiB chunks, none of which may stay in memory.
    conn.send_sync(SYNC_ID)
    chunk = b"a" * 65536
    for _ in range(128):
        conn.receive_data(chunk)
        assert conn.next_event() is NEED_DATA
        assert len(conn._buffer) == 0
    conn.receive_data(b'"}\n' + STRAY + OUR_SYNC)
    assert conn.next_event() == SyncReply(SYNC_ID)
    assert not conn.needs_sync
    conn.send_command("guest-ping")
    conn.receive_data(b'{"return": {}}\n')
    assert conn.next_event() == Reply({})


def test_sync_memory_is_bounded_after_a_bogus_sentinel() -> None:
    conn = syncing()
    conn.receive_data(b"\xff")  # noise that looks like a sentinel
    for _ in range(64):
        conn.receive_data(b"x" * 65536)  # ... followed by no line end
        assert conn.next_event() is NEED_DATA
        assert len(conn._buffer) <= 65536 + 4096
    conn.receive_data(OUR_SYNC)
    assert conn.next_event() == SyncReply(SYNC_ID)


def test_exec_status_gets_room_for_the_output_qemu_ga_keeps() -> None:
    # qemu-ga keeps 16 MiB of each stream and base64s both into one reply.
    out = base64.b64encode(b"o" * (16 << 20)).decode()
    err = base64.b64encode(b"e" * (16 << 20)).decode()
    status = {"exited": True, "exitcode": 0, "out-data": out, "err-data": err}
    line = json.dumps({"return": status}).encode() + b"\n"
    assert len(line) > DEFAULT_MAX_REPLY_SIZE * 2
    conn = synced()
    conn.send_command("guest-exec-status", {"pid": 7})
    for start in range(0, len(line), 1 << 20):
        conn.receive_data(line[start : start + (1 << 20)])
    assert conn.next_event() == Reply(status)
    # ... while the same bytes for any other command are still too large
    conn.send_command("guest-file-read", {"handle": 1, "count": 1})
    conn.receive_data(line)
    with pytest.raises(ReplyTooLarge) as info:
        conn.next_event()
    assert info.value.limit == DEFAULT_MAX_REPLY_SIZE


def test_exec_status_floor_is_a_bound_too_and_never_lowers_a_larger_limit() -> None:
    floor = REPLY_SIZE_FLOORS["guest-exec-status"]
    conn = synced()
    conn.send_command("guest-exec-status", {"pid": 7})
    conn.receive_data(b'{"return": "' + b"a" * floor)
    with pytest.raises(ReplyTooLarge) as info:
        conn.next_event()
    assert info.value.limit == floor and info.value.command == "guest-exec-status"

    larger = synced(max_reply_size=floor * 2)
    larger.send_command("guest-exec-status", {"pid": 7})
    larger.receive_data(_reply_of_line_length(floor + 100))
    assert larger.next_event() == Reply("a" * (floor + 100 - 14))
    # the floor lasts for that one reply: the next command has the configured bound
    small = synced(max_reply_size=LIMIT)
    small.send_command("guest-exec-status", {"pid": 7})
    small.receive_data(_reply_of_line_length(LIMIT * 4))
    assert small.next_event() == Reply("a" * (LIMIT * 4 - 14))
    small.send_command("guest-info")
    small.receive_data(_reply_of_line_length(LIMIT + 1))
    with pytest.raises(ReplyTooLarge) as info:
        small.next_event()
    assert info.value.limit == LIMIT


def test_max_reply_size_must_be_positive() -> None:
    with pytest.raises(UsageError):
        QGAConnection(max_reply_size=0)


# ----------------------------------------------------------- ProtocolError

BAD_REPLIES = {
    "array": b"[1, 2]\n",
    "string": b'"return"\n',
    "number": b"42\n",
    "null": b"null\n",
    "not-json": b"this is not json\n",
    "truncated-json": b'{"return": \n',
    "neither-return-nor-error": b'{"greeting": "hello"}\n',
    "invalid-utf8": b'{"return": "\xfe\xfe"}\n',
    "deeply-nested": b"[" * 5000 + b"\n",
    "deeply-nested-object": b'{"return": ' + b"[" * 5000 + b"\n",
}


@pytest.mark.parametrize("case", sorted(BAD_REPLIES))
def test_bad_replies_are_protocol_errors(case: str) -> None:
    data = BAD_REPLIES[case]
    chunkings = list(splits(data)) if len(data) < 200 else [[data], [bytes([b]) for b in data]]
    for chunks in chunkings:
        outcome = drive(sent()(), chunks)
        assert outcome.error is not None
        assert outcome.error[0] is ProtocolError
        assert "guest-ping" in outcome.error[1]
        assert outcome.events == []
        assert outcome.state is State.IDLE  # the exchange is over...
        assert outcome.needs_sync  # ... and the stream untrusted


def test_protocol_error_keeps_evidence() -> None:
    conn = sent()()
    conn.receive_data(b'{"greeting": "hello"}\n')
    with pytest.raises(ProtocolError) as info:
        conn.next_event()
    assert info.value.command == "guest-ping"
    assert info.value.data == b'{"greeting": "hello"}'


def test_protocol_error_then_sync_recovers() -> None:
    conn = sent()()
    conn.receive_data(b"nope\nmore garbage")
    with pytest.raises(ProtocolError):
        conn.next_event()
    conn.send_sync(SYNC_ID)  # pending garbage is discarded up to the sentinel
    conn.receive_data(STRAY + OUR_SYNC)
    assert conn.next_event() == SyncReply(SYNC_ID)
    assert not conn.needs_sync


# ----------------------------------------------------------- usage & state


def test_send_while_in_flight_is_a_usage_error() -> None:
    conn = sent()()
    with pytest.raises(UsageError, match="guest-ping is still in flight"):
        conn.send_command("guest-info")
    conn = syncing()
    with pytest.raises(UsageError, match="in flight"):
        conn.send_command("guest-info")


def test_send_with_unread_data_pending_is_refused() -> None:
    conn = sent()()
    conn.receive_data(b'{"return": 1}\n{"return": 2}\n')
    assert conn.next_event() == Reply(1)
    assert conn.needs_sync
    with pytest.raises(ProtocolError, match="sync first"):
        conn.send_command("guest-info")
    assert conn.state is State.IDLE


@pytest.mark.parametrize(
    ("name", "arguments"),
    [
        ("", None),
        (None, None),
        ("guest-ping", [1, 2]),
        ("guest-ping", {"x": b"bytes"}),
        ("guest-ping", {"x": math.nan}),
        ("guest-ping", {"x": math.inf}),
        ("guest-ping", {("tuple", "key"): 1}),
    ],
)
def test_bad_requests_are_usage_errors(name: object, arguments: object) -> None:
    with pytest.raises(UsageError):
        encode_command(name, arguments)  # type: ignore[arg-type]
    conn = synced()
    with pytest.raises(UsageError):
        conn.send_command(name, arguments)  # type: ignore[arg-type]
    assert conn.state is State.IDLE  # nothing was started
    assert conn.command is None


@pytest.mark.parametrize("sync_id", ["7", True, 7.0, None])
def test_sync_id_must_be_an_int(sync_id: object) -> None:
    with pytest.raises(UsageError):
        QGAConnection().send_sync(sync_id)  # type: ignore[arg-type]


def test_abandon_drops_what_was_in_flight() -> None:
    conn = sent()()
    conn.receive_data(b'{"return": {"partial')
    conn.abandon()
    assert conn.state is State.IDLE
    assert conn.needs_sync
    assert len(conn._buffer) == 0
    # the late rest of the abandoned reply is skipped by the next sync
    conn.send_sync(SYNC_ID)
    conn.receive_data(b'": 1}}\n' + STRAY + OUR_SYNC)
    assert conn.next_event() == SyncReply(SYNC_ID)


def test_sync_may_interrupt_a_command() -> None:
    conn = sent()()
    conn.receive_data(b'{"return": "la')
    conn.send_sync(SYNC_ID)
    conn.receive_data(b'te"}\n' + STRAY + OUR_SYNC)
    assert conn.next_event() == SyncReply(SYNC_ID)
    assert conn.state is State.IDLE


def test_resync_after_abandoned_sync_drops_the_stale_sync_reply() -> None:
    conn = QGAConnection()
    conn.send_sync(5)
    conn.abandon()
    conn.send_sync(SYNC_ID)
    conn.receive_data(STRAY + b'\xff{"return": 5}\n' + STRAY + OUR_SYNC)
    assert conn.next_event() == SyncReply(SYNC_ID)
    assert conn.stale_replies_dropped == 1


def test_command_done_without_reply() -> None:
    conn = synced()
    conn.send_command("guest-shutdown")
    conn.command_done_without_reply()
    assert conn.state is State.IDLE
    assert conn.command is None
    assert conn.needs_sync  # the agent may still speak (or be gone)
    conn.command_done_without_reply()  # idempotent when idle
    assert conn.state is State.IDLE


def test_idle_connection_needs_data_and_ignores_nothing() -> None:
    conn = synced()
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b'{"return": "unasked"}\n')
    assert conn.next_event() is NEED_DATA  # nothing is in flight
    with pytest.raises(ProtocolError):  # ... but the next command will not take it
        conn.send_command("guest-ping")
    assert conn.needs_sync


# ----------------------------------------------------------------- fuzzing

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def _chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    out, start = [], 0
    for p in points:
        out.append(data[start:p])
        start = p
    out.append(data[start:])
    return [c for c in out if c]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.binary(max_size=300), max_size=8),
    st.sampled_from(["sync", "command"]),
    st.integers(min_value=16, max_value=4096),
)
def test_fuzz_arbitrary_bytes_only_raise_protocol_errors(
    chunks: list[bytes], mode: str, limit: int
) -> None:
    conn = QGAConnection(max_reply_size=limit)
    if mode == "sync":
        conn.send_sync(SYNC_ID)
    else:
        conn.send_sync(1)
        conn.receive_data(b'\xff{"return": 1}\n')
        conn.next_event()
        conn.send_command("guest-ping")
    try:
        for chunk in [*chunks, b""]:
            conn.receive_data(chunk)
            while (event := conn.next_event()) is not NEED_DATA:
                assert isinstance(event, Reply | ErrorReply | SyncReply | Closed)
                if isinstance(event, Closed):
                    return
                if conn.state is State.IDLE:
                    return
    except ProtocolError:  # ReplyTooLarge included
        assert conn.state is State.IDLE
        assert conn.needs_sync


@settings(max_examples=300)
@given(
    st.binary(max_size=2000).map(lambda b: b.replace(b"\xff", b"")),
    st.integers(min_value=1, max_value=2**31 - 1),
    st.lists(st.integers(min_value=0, max_value=3000), max_size=6),
)
def test_fuzz_sync_after_non_sentinel_garbage(
    garbage: bytes, sync_id: int, cuts: list[int]
) -> None:
    conn = QGAConnection()
    conn.send_sync(sync_id)
    data = garbage + b"\xff" + json.dumps({"return": sync_id}).encode() + b"\n"
    events = []
    for chunk in _chunked(data, cuts):
        conn.receive_data(chunk)
        while (event := conn.next_event()) is not NEED_DATA:
            events.append(event)
    assert events == [SyncReply(sync_id)]
    assert not conn.needs_sync
    assert conn.stale_replies_dropped == 0
    assert len(conn._buffer) == 0


@settings(max_examples=300)
@given(
    st.binary(max_size=6000),
    st.integers(min_value=1, max_value=2**31 - 1),
    st.lists(st.integers(min_value=0, max_value=7000), max_size=6),
)
def test_fuzz_sync_survives_any_garbage_even_with_sentinels(
    garbage: bytes, sync_id: int, cuts: list[int]
) -> None:
    """Even noise with 0xFF bytes in it (serial lines...) cannot stop a sync."""
    conn = QGAConnection()
    conn.send_sync(sync_id)
    data = garbage + b"\xff" + json.dumps({"return": sync_id}).encode() + b"\n"
    events = []
    for chunk in _chunked(data, cuts):
        conn.receive_data(chunk)
        while (event := conn.next_event()) is not NEED_DATA:
            events.append(event)
    assert events[:1] == [SyncReply(sync_id)]


@settings(max_examples=200)
@given(json_values, st.lists(st.integers(min_value=0, max_value=500), max_size=5))
def test_fuzz_any_reply_value_however_chunked(value: object, cuts: list[int]) -> None:
    conn = synced()
    conn.send_command("guest-ping")
    data = json.dumps({"return": value}, ensure_ascii=False).encode() + b"\n"
    events = []
    for chunk in _chunked(data, cuts):
        conn.receive_data(chunk)
        while (event := conn.next_event()) is not NEED_DATA:
            events.append(event)
    assert events == [Reply(value)]
    assert not conn.needs_sync


@settings(max_examples=300)
@given(
    st.text(min_size=1),
    st.none() | st.dictionaries(st.text(), json_values, max_size=5),
)
def test_fuzz_encode_command_round_trips(name: str, arguments: dict | None) -> None:
    data = encode_command(name, arguments)
    assert data.endswith(b"\n")
    assert data.count(b"\n") == 1  # one line
    assert SENTINEL not in data  # never a byte that resets the agent's parser
    assert data.isascii()
    expected: dict[str, object] = {"execute": name}
    if arguments is not None:
        expected["arguments"] = arguments
    assert json.loads(data) == expected
