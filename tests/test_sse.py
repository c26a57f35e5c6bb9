"""sse.read_stream over MockTransport: framing (CR, LF, CRLF, comments, multi-line data), bad input, caps."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

import httpx
import pytest

from conformance.evidence import SSEEvent
from conformance.sse import parse_event_data, read_body, read_stream
from conformance.target import Limits

LIMITS = Limits(idle_timeout=0.5, total_timeout=2.0, max_bytes=64 * 1024, max_event_bytes=8 * 1024)


def _read(chunks: Iterable[bytes], limits: Limits = LIMITS) -> tuple[list[SSEEvent], int, str | None]:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=iter(chunks))

    with httpx.Client(transport=httpx.MockTransport(handler)) as c:
        start = time.monotonic()
        with c.stream("POST", "http://target.test/v1/chat/completions") as resp:
            return read_stream(resp, start=start, limits=limits)


def _data(events: list[SSEEvent]) -> list[str]:
    return [e.data for e in events]


@pytest.mark.parametrize("nl", [b"\n", b"\r", b"\r\n"])
def test_line_endings(nl: bytes) -> None:
    raw = b'data: {"a": 1}' + nl + nl + b"data: [DONE]" + nl + nl
    events, comments, err = _read([raw])
    assert err is None and comments == 0
    assert _data(events) == ['{"a": 1}', "[DONE]"]
    assert events[0].json == {"a": 1} and events[0].json_error is None and not events[0].done
    assert events[1].done and events[1].json is None and events[1].json_error is None


def test_crlf_split_across_chunks_and_byte_by_byte() -> None:
    raw = b'data: {"a": 1}\r\n\r\n: keep-alive\r\ndata: x\r\n\r\ndata: [DONE]\r\n\r\n'
    events, comments, err = _read([raw[i : i + 1] for i in range(len(raw))])
    assert err is None
    assert _data(events) == ['{"a": 1}', "x", "[DONE]"]
    assert comments == 1
    events2, _, _ = _read([b'data: {"a": 1}\r', b"\n\r", b"\ndata: [DONE]\r\n\r\n"])
    assert _data(events2) == ['{"a": 1}', "[DONE]"]


def test_comments_counted_and_not_events() -> None:
    raw = b": ping\n\n:\n: another\ndata: {}\n\ndata: [DONE]\n\n"
    events, comments, err = _read([raw])
    assert comments == 3
    assert _data(events) == ["{}", "[DONE]"]
    assert err is None


def test_multiline_data_event_and_id_fields() -> None:
    raw = b"event: delta\nid: 7\ndata: line1\ndata:line2\ndata\n\ndata: plain\n\n"
    events, _, err = _read([raw])
    assert err is None
    assert events[0].data == "line1\nline2\n" and events[0].event == "delta" and events[0].id == "7"
    assert events[0].json is None and events[0].json_error
    # id is per event: the next event without an id field has none, and the default type is "message"
    assert events[1].data == "plain" and events[1].id is None and events[1].event == "message"


def test_event_without_data_is_not_dispatched_and_blank_lines_are_harmless() -> None:
    raw = b"event: ping\n\n\n\nid: 3\n\n\ndata: [DONE]\n\n"
    events, _, err = _read([raw])
    assert err is None
    assert _data(events) == ["[DONE]"]


def test_empty_data_is_an_event() -> None:
    events, _, _ = _read([b"data:\n\n"])
    assert _data(events) == [""] and events[0].json_error


def test_missing_final_blank_line_discards_the_open_event_and_says_so() -> None:
    events, _, err = _read([b'data: {"a": 1}\n\ndata: [DONE]\n'])
    assert _data(events) == ['{"a": 1}']
    assert err is not None and err.startswith("connection closed mid-event") and "[DONE]" in err
    events, _, err = _read([b'data: {"a": 1}\n\ndata: [DONE]'])
    assert _data(events) == ['{"a": 1}'] and err is not None and "[DONE]" in err


def test_trailing_comment_without_newline_is_not_an_error() -> None:
    events, comments, err = _read([b"data: [DONE]\n\n: bye"])
    assert err is None and comments == 1 and _data(events) == ["[DONE]"]


def test_invalid_utf8_is_replaced_never_crashes() -> None:
    events, _, err = _read([b'data: {"a": "\xff\xfe"}\n\n', b"data: \xc3\n\n", b"data: [DONE]\n\n"])
    assert err is None
    assert events[0].json == {"a": "\ufffd\ufffd"}
    assert events[1].data == "\ufffd"


def test_utf8_char_split_across_chunks() -> None:
    raw = 'data: {"a": "é€"}\n\n'.encode()
    cut = raw.index(b"\xe2") + 1
    events, _, err = _read([raw[:cut], raw[cut:]])
    assert err is None and events[0].json == {"a": "é€"}


def test_bom_is_stripped() -> None:
    events, _, _ = _read([b"\xef\xbb\xbfdata: {}\n\n"])
    assert _data(events) == ["{}"]


def test_events_after_done_are_captured() -> None:
    events, _, err = _read([b"data: [DONE]\n\n", b'data: {"late": true}\n\n', b"data: [DONE]\n\n"])
    assert err is None
    assert _data(events) == ["[DONE]", '{"late": true}', "[DONE]"]


def test_json_errors_and_nan() -> None:
    assert parse_event_data("{bad")[0] is None and parse_event_data("{bad")[1]
    assert parse_event_data("NaN") == (None, "invalid JSON constant NaN")
    assert parse_event_data("[DONE]") == (None, None)
    assert parse_event_data("[1]") == ([1], None)


def test_event_arrival_times_increase() -> None:
    def slow() -> Iterator[bytes]:
        yield b"data: 1\n\n"
        time.sleep(0.05)
        yield b"data: 2\n\n"

    events, _, _ = _read(slow())
    assert 0 <= events[0].t < events[1].t and events[1].t - events[0].t >= 0.04


def test_oversized_event_stops_reading() -> None:
    big = b"data: " + b"x" * 9000 + b"\n\n"
    events, _, err = _read([b"data: {}\n\n", big, b"data: [DONE]\n\n"])
    assert err == "SSE event larger than 8192 bytes"
    assert _data(events) == ["{}"]


def test_oversized_event_in_many_data_lines_and_unterminated_line() -> None:
    lines = b"".join(b"data: " + b"y" * 100 + b"\n" for _ in range(100))
    _, _, err = _read([lines, b"\n"])
    assert err == "SSE event larger than 8192 bytes"
    _, _, err = _read([b"data: " + b"z" * 5000, b"z" * 5000])  # no newline at all
    assert err == "SSE event larger than 8192 bytes"


def test_stream_byte_cap() -> None:
    def endless() -> Iterator[bytes]:
        while True:
            yield b"data: " + b"1" * 1000 + b"\n\n"

    t0 = time.monotonic()
    events, _, err = _read(endless())
    assert err == f"response larger than {64 * 1024} bytes"
    assert 60 <= len(events) <= 66
    assert time.monotonic() - t0 < 2


def test_total_deadline_checked_after_each_chunk() -> None:
    def trickle() -> Iterator[bytes]:
        while True:
            time.sleep(0.1)
            yield b": k\n"

    limits = Limits(idle_timeout=0.5, total_timeout=0.6)
    t0 = time.monotonic()
    _, comments, err = _read(trickle(), limits)
    assert err == "total deadline 0.6s exceeded"
    assert comments >= 4
    assert time.monotonic() - t0 < 2


def test_read_body_caps_and_decodes() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=iter([b"\xff" * 10, b"a" * 70_000]))

    with httpx.Client(transport=httpx.MockTransport(handler)) as c:
        with c.stream("GET", "http://target.test/x") as resp:
            text, truncated, err = read_body(resp, start=time.monotonic(), limits=LIMITS)
    assert truncated and err == f"response larger than {64 * 1024} bytes"
    assert text.startswith("\ufffd" * 10) and len(text) == 64 * 1024
