"""The check record (category, severity, one-line message, fix), the collector and the table ``driver validate``
prints."""

from __future__ import annotations

import dataclasses
import re

CATEGORIES = ("architecture", "data", "stages", "hyper-parameters", "logging", "checkpoints", "hardware")
SEVERITIES = ("error", "warning", "info")


@dataclasses.dataclass
class Check:
    category: str
    name: str
    ok: bool
    severity: str          # severity if it fails: error | warning | info
    message: str
    fix: str = ""

    @property
    def status(self) -> str:
        return "PASS" if self.ok else self.severity.upper()


def _one_line(text: str) -> str:
    return re.sub(r"\s*\n\s*", "; ", str(text)).strip()


class Checks:
    def __init__(self):
        self.items: list[Check] = []

    def add(self, category, name, ok, message, fix="", severity="error", passed: str | None = None):
        """``message`` describes a failure; ``passed`` (default: ``message``) is shown when the check passes,
        so that a PASS row states the value instead of the problem."""
        assert category in CATEGORIES and severity in SEVERITIES, (category, severity)
        ok = bool(ok)
        text = passed if ok and passed is not None else message
        self.items.append(Check(category, name, ok, severity, _one_line(text), _one_line(fix)))
        return ok


def sort_checks(items: list[Check]) -> list[Check]:
    order = {k: i for i, k in enumerate(CATEGORIES)}
    return sorted(items, key=lambda x: order[x.category])   # stable: keeps the order within a category


def errors(checks) -> list[Check]:
    return [x for x in checks if not x.ok and x.severity == "error"]


def format_table(checks) -> str:
    lines, cat = [], None
    for x in checks:
        if x.category != cat:
            cat = x.category
            lines.append(f"\n[{cat}]")
        fix = f"  → {x.fix}" if not x.ok and x.fix else ""
        lines.append(f"  {x.status:7s} {x.name:28s} {x.message}{fix}")
    n_err = len(errors(checks))
    n_warn = sum(not x.ok and x.severity == "warning" for x in checks)
    lines.append(f"\n{len(checks)} checks: {n_err} error(s), {n_warn} warning(s)")
    return "\n".join(lines).lstrip("\n")
