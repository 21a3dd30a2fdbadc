"""The URL hash: what is open (`#t=<thread>&p=<pin>,<pin>`), read and written. Plain Python (main.py applies it).

The page writes the hash with `history.replaceState` (no history entry, no `hashchange`); a hash set from outside
(a pasted link, back / forward) fires `hashchange`, and main.App opens what it names.
"""

from __future__ import annotations

__all__ = ["parse_hash", "format_hash", "pin_changes"]


def parse_hash(value: str) -> dict:
    """`#t=3&p=5,6` -> {"t": 3, "p": [5, 6]}; anything malformed is ignored."""
    out: dict = {}
    for part in value.lstrip("#").split("&"):
        key, _, raw = part.partition("=")
        try:
            if key == "t":
                out["t"] = int(raw)
            elif key == "p":
                out["p"] = [int(x) for x in raw.split(",") if x]
        except ValueError:
            continue
    return out


def format_hash(main_id: int | None, pin_ids: list[int]) -> str:
    """The hash for a main thread and its open pins; "" when nothing is open (a draft)."""
    parts = []
    if main_id is not None:
        parts.append(f"t={main_id}")
    if pin_ids:
        parts.append("p=" + ",".join(str(p) for p in pin_ids))
    return "#" + "&".join(parts) if parts else ""


def pin_changes(shown: list[int], wanted: list[int]) -> tuple[list[int], list[int]]:
    """(pins to close, pins to open) to go from the pin panels `shown` to `wanted`."""
    return [p for p in shown if p not in wanted], [p for p in wanted if p not in shown]
