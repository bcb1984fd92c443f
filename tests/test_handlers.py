"""Built-in services (docs/services.md): the same bytes out for the same bytes in."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from zmqflow import handlers
from zmqflow.handlers import BUILTIN

CASES: list[dict[str, Any]] = json.loads(
    (Path(__file__).resolve().parents[1] / "docs" / "service-vectors" / "services.json").read_text()
)
HEADER = "region,product,quantity,unit_price_cents\n"
BAD_HEADER = "rollup: header must be region,product,quantity,unit_price_cents"


def _case_id(case: dict[str, Any]) -> str:
    outcome = "error" if "error" in case else "ok"
    return f"{case['service']}-{outcome}-{case['payload_hex'][:24]}"


def test_every_documented_service_is_built_in():
    assert set(BUILTIN) == {"echo", "sleep", "sha256", "rollup"}
    assert {case["service"] for case in CASES} == set(BUILTIN)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_service_vector(case: dict[str, Any]):
    handler = BUILTIN[case["service"]]
    payload = bytes.fromhex(case["payload_hex"])

    if "error" in case:
        with pytest.raises(Exception) as info:
            handler(payload, {})
        assert str(info.value) == case["error"]
    else:
        assert handler(payload, {}) == bytes.fromhex(case["output_hex"])


def test_handlers_work_without_headers():
    assert handlers.echo(b"x") == b"x"
    assert handlers.sha256(b"") == (
        b"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )


def test_sleep_waits_the_given_milliseconds_and_returns_the_payload():
    started = time.monotonic()
    assert handlers.sleep(b" 30\r\n") == b" 30\r\n"
    assert time.monotonic() - started >= 0.03


@pytest.mark.parametrize("payload", [b"-1", b"1.5", b"", b"1e3", b"ten"])
def test_sleep_refuses_anything_but_a_whole_non_negative_number(payload: bytes):
    with pytest.raises(ValueError) as info:
        handlers.sleep(payload)
    assert str(info.value) == "sleep: payload must be a whole number of milliseconds"


def test_rollup_totals_regions_and_picks_the_top_product():
    csv = HEADER + "eu,widget,2,300\neu,gadget,3,300\r\nus, widget ,1,100\n\n"

    out = json.loads(handlers.rollup(csv.encode()))

    assert out == {
        "regions": {
            "eu": {"orders": 2, "quantity": 5, "revenue_cents": 1500},
            "us": {"orders": 1, "quantity": 1, "revenue_cents": 100},
        },
        "rows": 3,
        "top_product": "gadget",  # 900 cents against widget's 600 + 100
        "total_revenue_cents": 1600,
    }


def test_rollup_output_is_canonical_json():
    out = handlers.rollup((HEADER + "eu,widget,2,300\n").encode())
    assert out == (
        b'{"regions":{"eu":{"orders":1,"quantity":2,"revenue_cents":600}},'
        b'"rows":1,"top_product":"widget","total_revenue_cents":600}'
    )


def test_rollup_breaks_revenue_ties_by_the_smallest_name_in_byte_order():
    csv = HEADER + "eu,b,1,10\neu,a,1,10\neu,B,1,10\n"
    assert json.loads(handlers.rollup(csv.encode()))["top_product"] == "B"


def test_rollup_keeps_non_ascii_text_unescaped():
    out = handlers.rollup((HEADER + "zürich,käse,1,5\n").encode())
    assert "zürich".encode() in out


@pytest.mark.parametrize(
    ("csv", "error"),
    [
        ("", "rollup: header must be region,product,quantity,unit_price_cents"),
        (
            "region,product,quantity\n",
            "rollup: header must be region,product,quantity,unit_price_cents",
        ),
        (HEADER + "eu,w,1,1\neu,w,1\n", "rollup: line 3: expected 4 fields, got 3"),
        (HEADER + "eu,w,1,1,1\n", "rollup: line 2: expected 4 fields, got 5"),
        (HEADER + "eu,w,-1,1\n", "rollup: line 2: quantity is not a non-negative integer"),
        (HEADER + "eu,w,2147483648,1\n", "rollup: line 2: quantity is not a non-negative integer"),
        (
            HEADER + "eu,w,1,\u0661\n",
            "rollup: line 2: unit_price_cents is not a non-negative integer",
        ),
        (HEADER + " ,w,1,1\n", "rollup: line 2: empty region"),
        (HEADER + "eu,,1,1\n", "rollup: line 2: empty product"),
    ],
    ids=[
        "empty",
        "short-header",
        "short-row-line-3",
        "long-row",
        "negative",
        "too-big",
        "non-ascii-digit",
        "blank-region",
        "empty-product",
    ],
)
def test_rollup_errors_carry_the_documented_text(csv: str, error: str):
    with pytest.raises(ValueError) as info:
        handlers.rollup(csv.encode())
    assert str(info.value) == error


def test_rollup_line_numbers_count_blank_lines():
    with pytest.raises(ValueError) as info:
        handlers.rollup((HEADER + "eu,w,1,1\n\n,w,1,1\n").encode())
    assert str(info.value) == "rollup: line 4: empty region"


def test_rollup_refuses_invalid_utf8():
    with pytest.raises(ValueError) as info:
        handlers.rollup(HEADER.encode() + b"\xff,w,1,1\n")
    assert str(info.value) == "rollup: payload is not UTF-8"
