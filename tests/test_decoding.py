"""The decode layer (gagent.decoding): a reply line to its event in one pass, and the
words of its errors, for typed and plain-JSON decoders alike."""

from __future__ import annotations

import json

import msgspec
import pytest

from gagent.decoding import Described, convert
from gagent.errors import ProtocolError
from gagent.protocol import ErrorReply, Reply
from gagent.replies import decoder_for, untyped_decoder


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"[" * 5000 + b"]" * 5000, "is not a JSON object"),
        (b'{"return": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested too deeply|expected a JSON"),
        (b"<html>", "is not JSON"),
        (b"[1, 2]", "is not a JSON object"),
        (b'{"greeting": 1}', "neither 'return' nor 'error'"),
        (b'{"return": {"version": 7}}', "member 'version' should be str, got number"),
    ],
)
def test_a_bad_reply_line_is_a_protocol_error_naming_the_command(line: bytes, message: str) -> None:
    for decoder in (decoder_for("guest-info"), untyped_decoder("guest-info")):
        if "version" in message and decoder is untyped_decoder("guest-info"):
            continue  # plain JSON has no shape to break
        with pytest.raises(ProtocolError, match=message) as caught:
            decoder(line)
        assert caught.value.command == "guest-info"


def test_an_error_reply_decodes_to_the_codecs_error_event() -> None:
    error = {"class": "CommandNotFound", "desc": "no such command"}
    line = json.dumps({"error": error}).encode()
    for decoder in (decoder_for("guest-info"), untyped_decoder("guest-info")):
        assert decoder(line) == ErrorReply(error)


def test_the_same_line_again_is_the_same_value_only_where_asked() -> None:
    line = b'{"return": {"version": "1", "supported_commands": [{"name": "a"}]}}'
    first, again = decoder_for("guest-info")(line), decoder_for("guest-info")(line)
    assert type(first) is Reply and again.value is first.value  # guest-info keeps its last
    line = b'{"return": {"zone": "UTC", "offset": 0}}'
    timezone = decoder_for("guest-get-timezone")
    assert timezone(line).value is not timezone(line).value


class Sample(Described, frozen=True):
    command = "guest-sample"

    name: str
    size: int = 0
    tags: tuple[str, ...] = ()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"size": 1}, "member 'name' is missing"),
        ({"name": "x", "size": "1"}, "member 'size' should be int, got string"),
        ({"name": "x", "tags": [1]}, "the members of 'tags' must be strings, got number"),
        ({"name": "x", "tags": {}}, "member 'tags': expected a JSON array, got object"),
        ([], "the reply: expected a JSON object, got array"),
    ],
)
def test_shape_errors_say_what_and_where(value, message) -> None:
    with pytest.raises(ProtocolError) as caught:
        Sample.from_json(value)
    assert str(caught.value) == f"guest-sample: {message}"
    assert caught.value.command == "guest-sample"
    with pytest.raises(ProtocolError) as again:
        convert(value, Sample, "guest-sample")
    assert str(again.value) == str(caught.value)


def test_a_struct_is_frozen_and_keeps_its_defaults() -> None:
    sample = Sample.from_json({"name": "x"})
    assert sample == Sample("x") and (sample.size, sample.tags) == (0, ())
    with pytest.raises(AttributeError):
        sample.name = "y"  # type: ignore[misc]
    assert msgspec.json.decode(json.dumps({"name": "x"}), type=Sample) == sample
