"""django_gearman.gearman.envelope, unit by unit: the JSON wire format of tasks
(docs/wire-format.md)."""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from django_gearman.gearman.envelope import (
    Call,
    EnvelopeError,
    decode_call,
    decode_error,
    decode_result,
    encode_call,
    encode_error,
    encode_result,
)

HINT = "which JSON cannot carry; pass JSON types"

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


# -- round trips ---------------------------------------------------------------------------


def test_a_call_round_trips_as_compact_utf8_json() -> None:
    data = encode_call(
        [1, "two", [3.5, None]], {"four": {"x": True}}, {"attempt": 2, "enqueued_at": 1764000000.5}
    )
    assert data == (
        b'{"args":[1,"two",[3.5,null]],"kwargs":{"four":{"x":true}},'
        b'"meta":{"attempt":2,"enqueued_at":1764000000.5}}'
    )
    assert decode_call(data) == Call(
        [1, "two", [3.5, None]], {"four": {"x": True}}, {"attempt": 2, "enqueued_at": 1764000000.5}
    )


def test_unicode_travels_as_utf8_not_escapes() -> None:
    data = encode_call(["żółw ✓ 🐢"], {"ключ": "値"})
    assert data == '{"args":["żółw ✓ 🐢"],"kwargs":{"ключ":"値"}}'.encode()
    assert decode_call(data) == Call(["żółw ✓ 🐢"], {"ключ": "値"}, {})
    # \u escapes (what PHP's json_encode sends by default) decode to the same text
    assert decode_call(json.dumps({"args": ["żółw ✓ 🐢"]}).encode()).args == ["żółw ✓ 🐢"]


def test_tuples_travel_as_arrays() -> None:
    assert encode_call((1, (2, (3,)))) == b'{"args":[1,[2,[3]]]}'
    assert decode_call(encode_call((1, (2, (3,))))).args == [1, [2, [3]]]


@pytest.mark.parametrize(
    ("args", "kwargs", "meta", "wire"),
    [
        ((), None, None, b"{}"),
        ([], {}, {}, b"{}"),
        ([1], {}, None, b'{"args":[1]}'),
        ((), {"a": 1}, {}, b'{"kwargs":{"a":1}}'),
        ((), None, {"background": True}, b'{"meta":{"background":true}}'),
    ],
)
def test_empty_parts_are_left_out(args: Any, kwargs: Any, meta: Any, wire: bytes) -> None:
    assert encode_call(args, kwargs, meta) == wire


@pytest.mark.parametrize(
    "wire",
    [
        b"{}",
        b" { } ",
        b'{"args":[]}',
        b'{"kwargs":{}}',
        b'{"meta":{}}',
        b'{"args":[],"kwargs":{},"meta":{}}',
    ],
)
def test_every_key_may_be_left_out(wire: bytes) -> None:
    assert decode_call(wire) == Call([], {}, {})


@given(
    st.lists(json_values, max_size=4),
    st.dictionaries(st.text(max_size=8), json_values, max_size=4),
    json_values,
)
@settings(max_examples=200, deadline=None)
def test_any_json_values_round_trip(args: list[Any], kwargs: dict[str, Any], result: Any) -> None:
    call = decode_call(encode_call(args, kwargs))
    assert (call.args, call.kwargs) == (args, kwargs)
    assert decode_result(encode_result(result)) == result


@pytest.mark.parametrize(
    "value",
    [
        None,
        0,
        -7,
        2**70,
        1.5,
        "",
        "é",
        [],
        {},
        [1, {"a": [None]}],
        {"nested": {"deep": [True, False]}},
    ],
)
def test_results_round_trip(value: Any) -> None:
    data = encode_result(value)
    assert json.loads(data) == value
    assert decode_result(data) == value


def test_an_empty_result_is_none() -> None:
    assert decode_result(b"") is None
    assert decode_result(b"null") is None


# -- decode_call: what is wrong with a workload ---------------------------------------------

NOT_AN_OBJECT = (
    'the workload must be a JSON object like {"args": [...], "kwargs": {...}}, not a JSON '
)


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (
            b"\xff{}",
            "the workload is not UTF-8 text: "
            "'utf-8' codec can't decode byte 0xff in position 0: invalid start byte",
        ),
        (b"hello", 'the workload is not JSON (Expecting value: line 1 column 1 (char 0)): "hello"'),
        (b"", 'the workload is not JSON (Expecting value: line 1 column 1 (char 0)): ""'),
        (
            b'{"args": [1]',
            "the workload is not JSON (Expecting ',' delimiter: line 1 column 13 (char 12)): "
            '"{"args": [1]"',
        ),
        (
            b"x" * 100,
            f'the workload is not JSON (Expecting value: line 1 column 1 (char 0)): "{"x" * 60}"',
        ),
        (b"[1, 2]", NOT_AN_OBJECT + "array"),
        (b'"text"', NOT_AN_OBJECT + "string"),
        (b"12", NOT_AN_OBJECT + "number"),
        (b"true", NOT_AN_OBJECT + "boolean"),
        (b"null", NOT_AN_OBJECT + "null"),
        (
            b'{"arg": [1]}',
            'unknown key(s) \'arg\' in the workload; it may have "args", "kwargs" and "meta"',
        ),
        (
            b'{"args": [], "zz": 1, "aa": 2}',
            "unknown key(s) 'aa', 'zz' in the workload; "
            'it may have "args", "kwargs" and "meta"',
        ),
        (b'{"args": {"a": 1}}', '"args" must be a JSON array, not a JSON object'),
        (b'{"args": "1, 2"}', '"args" must be a JSON array, not a JSON string'),
        (b'{"args": null}', '"args" must be a JSON array, not a JSON null'),
        (
            b'{"kwargs": []}',
            '"kwargs" must be a JSON object, not a JSON array',
        ),  # PHP's json_encode(["kwargs" => []])
        (b'{"kwargs": 3}', '"kwargs" must be a JSON object, not a JSON number'),
        (b'{"meta": true}', '"meta" must be a JSON object, not a JSON boolean'),
        (b'{"meta": [1]}', '"meta" must be a JSON object, not a JSON array'),
    ],
)
def test_malformed_workloads_are_explained(wire: bytes, message: str) -> None:
    with pytest.raises(EnvelopeError) as info:
        decode_call(wire)
    assert str(info.value) == message


def test_envelope_error_is_a_value_error() -> None:
    assert issubclass(EnvelopeError, ValueError)


# -- encode_call / encode_result: values JSON cannot carry -----------------------------------


class Model:
    def __repr__(self) -> str:
        return "<Model pk=1>"


@pytest.mark.parametrize(
    ("args", "kwargs", "place"),
    [
        ((1, Model()), {}, "argument 1 is Model (<Model pk=1>)"),
        ((b"raw",), {}, "argument 0 is bytes (b'raw')"),
        (({1, 2},), {}, "argument 0 is set ({1, 2})"),
        (([1, [2, {"a": Model()}]],), {}, "argument 0[1][1]['a'] is Model (<Model pk=1>)"),
        (
            (),
            {"when": datetime(2026, 1, 2, 3, 4, 5)},
            "keyword argument 'when' is datetime (datetime.datetime(2026, 1, 2, 3, 4, 5))",
        ),
        (
            (),
            {"opts": {"at": [0, datetime(2026, 1, 2)]}},
            "keyword argument 'opts'['at'][1] is datetime (datetime.datetime(2026, 1, 2, 0, 0))",
        ),
        ((), {"k": {(1, 2): "tuple key"}}, "keyword argument 'k' key (1, 2) is tuple ((1, 2))"),
        ((float("nan"),), {}, "argument 0 is NaN/Infinity (nan)"),
        ((1, [float("inf")]), {}, "argument 1[0] is NaN/Infinity (inf)"),
        ((), {"x": {"y": -math.inf}}, "keyword argument 'x'['y'] is NaN/Infinity (-inf)"),
    ],
)
def test_arguments_json_cannot_carry_are_named(
    args: tuple[Any, ...], kwargs: dict[str, Any], place: str
) -> None:
    with pytest.raises(EnvelopeError) as info:
        encode_call(args, kwargs)
    message = str(info.value)
    assert message.startswith(f"{place}, {HINT}"), message
    assert "e.g. an id instead of a model instance" in message


def test_the_first_bad_value_is_named() -> None:
    with pytest.raises(EnvelopeError, match=r"^argument 1 is Model"):
        encode_call([1, Model(), object()], {"z": object()})


def test_meta_values_json_cannot_carry_are_named() -> None:
    with pytest.raises(
        EnvelopeError, match=r"^meta\['x'\]\['y'\] is NaN/Infinity \(inf\), " + HINT
    ):
        encode_call((), None, {"x": {"y": math.inf}})
    with pytest.raises(EnvelopeError, match=r"^meta\['when'\] is datetime"):
        encode_call((), None, {"when": datetime(2026, 1, 1)})


def test_a_long_repr_is_cut_at_60_characters() -> None:
    with pytest.raises(EnvelopeError) as info:
        encode_call([{"s": {"x" * 100}}])
    assert f"argument 0['s'] is set ({{'{'x' * 58}), {HINT}" in str(info.value)


@pytest.mark.parametrize(
    ("value", "place"),
    [
        (Model(), "the result is Model (<Model pk=1>)"),
        (float("nan"), "the result is NaN/Infinity (nan)"),
        ({"a": [1, math.inf]}, "the result['a'][1] is NaN/Infinity (inf)"),
        ([datetime(2026, 1, 1)], "the result[0] is datetime (datetime.datetime(2026, 1, 1, 0, 0))"),
    ],
)
def test_results_json_cannot_carry_are_named(value: Any, place: str) -> None:
    with pytest.raises(EnvelopeError) as info:
        encode_result(value)
    assert str(info.value).startswith(f"{place}, {HINT}"), str(info.value)


@pytest.mark.parametrize(
    ("call", "place"),
    [
        (lambda: encode_call([{1: "a"}]), "argument 0 key 1 is int"),
        (lambda: encode_call((), {"by_id": {7: "x"}}), "keyword argument 'by_id' key 7 is int"),
        (lambda: encode_result({True: 1}), "the result key True is bool"),
    ],
)
def test_non_string_dict_keys_are_refused(call: Any, place: str) -> None:
    with pytest.raises(EnvelopeError, match=f"^{place}"):
        call()


@pytest.mark.parametrize(
    "encode", [lambda v: encode_call([v]), encode_result], ids=["call", "result"]
)
def test_a_self_referencing_value_is_an_envelope_error(encode: Any) -> None:  # found by review
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(EnvelopeError, match="Circular reference"):
        encode(loop)


def test_nan_and_infinity_are_not_accepted_when_decoding_either() -> None:
    for text in (b"NaN", b"[Infinity]", b'{"args": [-Infinity]}'):
        with pytest.raises(EnvelopeError, match="is not JSON"):
            decode_result(text) if not text.startswith(b"{") else decode_call(text)


# -- errors ----------------------------------------------------------------------------------


class Full(Exception):
    class Nested(Exception):
        pass


def test_encode_error_names_the_type_by_its_dotted_path() -> None:
    assert json.loads(encode_error(ValueError("bad value"))) == {
        "type": "ValueError",
        "message": "bad value",
    }
    assert json.loads(encode_error(KeyError("k"))) == {"type": "KeyError", "message": "'k'"}
    assert json.loads(encode_error(Full("queue"))) == {
        "type": f"{__name__}.Full",
        "message": "queue",
    }
    assert json.loads(encode_error(Full.Nested())) == {
        "type": f"{__name__}.Full.Nested",
        "message": "",
    }
    assert (
        json.loads(encode_error(EnvelopeError("x")))["type"]
        == "django_gearman.gearman.errors.EnvelopeError"
    )


def test_encode_error_is_utf8_and_compact() -> None:
    assert encode_error(RuntimeError("żółw")) == '{"type":"RuntimeError","message":"żółw"}'.encode()


def test_decode_error_reads_our_json() -> None:
    assert decode_error(encode_error(ValueError("bad"))) == ("ValueError", "bad")
    assert decode_error(encode_error(Full("żółw"))) == (f"{__name__}.Full", "żółw")
    assert decode_error(b'{"type": "InvalidArgumentException", "message": "argument 1"}') == (
        "InvalidArgumentException",
        "argument 1",
    )
    assert decode_error(b'{"message": "no type"}') == ("", "no type")
    assert decode_error(b'{"type": null, "message": "null type"}') == ("", "null type")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            b"Unable to add worker function",
            "Unable to add worker function",
        ),  # what pecl sends for a PHP exception
        (b"", ""),
        (b'{"type": "X", "message": 3}', '{"type": "X", "message": 3}'),
        (b'{"type": "X"}', '{"type": "X"}'),
        (b'["a"]', '["a"]'),
        (b'"quoted"', '"quoted"'),
        (b"bad \xff byte", "bad \ufffd byte"),
    ],
)
def test_decode_error_takes_other_text_as_the_message(data: bytes, message: str) -> None:
    assert decode_error(data) == ("", message)


# -- decode_result -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"done", 'the result is not JSON (Expecting value: line 1 column 1 (char 0)): "done"'),
        (
            b"\xff",
            "the result is not JSON "
            "('utf-8' codec can't decode byte 0xff in position 0: invalid start byte): \"\ufffd\"",
        ),
        (b"[1,", 'the result is not JSON (Expecting value: line 1 column 4 (char 3)): "[1,"'),
    ],
)
def test_a_result_that_is_not_json_is_explained(data: bytes, message: str) -> None:
    with pytest.raises(EnvelopeError) as info:
        decode_result(data)
    assert str(info.value) == message
