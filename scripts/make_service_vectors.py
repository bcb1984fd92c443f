"""Write docs/service-vectors/services.json: inputs and the exact outputs (or
error texts) of the built-in services, for every worker language's tests."""

from __future__ import annotations

import json
from pathlib import Path

from zmqflow.handlers import BUILTIN

OUT = Path(__file__).resolve().parent.parent / "docs" / "service-vectors" / "services.json"
HEADER = b"region,product,quantity,unit_price_cents\n"

CASES: list[tuple[str, bytes]] = [
    ("echo", b""),
    ("echo", b"\x00\x01hello\xff"),
    ("sleep", b"3"),
    ("sleep", b" 0\n"),
    ("sleep", b"soon"),
    ("sha256", b""),
    ("sha256", b"abc"),
    ("rollup", HEADER),
    ("rollup", HEADER + b"eu,widget,2,300\neu,gadget,3,300\r\nus, widget ,1,100\n\n"),
    ("rollup", HEADER + b"eu,b,1,5\nus,a,1,5\n"),
    ("rollup", "region,product,quantity,unit_price_cents\nasia,caf\u00e9,4,250\n".encode()),
    ("rollup", b"wrong,header\n"),
    ("rollup", HEADER + b"eu,widget,2\n"),
    ("rollup", HEADER + b"eu,widget,-2,300\n"),
    ("rollup", HEADER + b"eu,widget,2,3.5\n"),
    ("rollup", HEADER + b" ,widget,2,300\n"),
    ("rollup", HEADER + b"eu,,2,300\n"),
    ("rollup", HEADER + b"\xff\xfe,x,1,1\n"),
]


def main() -> None:
    cases = []
    for service, payload in CASES:
        case: dict[str, object] = {"service": service, "payload_hex": payload.hex()}
        try:
            case["output_hex"] = BUILTIN[service](payload, {}).hex()
        except ValueError as exc:
            case["error"] = str(exc)
        cases.append(case)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(cases, indent=2) + "\n")
    print(f"wrote {len(cases)} cases to {OUT}")


if __name__ == "__main__":
    main()
