"""The documentation keeps up with the code: every SWITCHYARD_ variable has a row in the
configuration reference, and every relative link in the docs points at a file that exists."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from core.settings import _FIELDS, PREFIX, Settings

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "configuration.md"
VARIABLE = re.compile(r"\bSWITCHYARD_[A-Z][A-Z_]*[A-Z]\b")
NOT_SETTINGS = {"SWITCHYARD_TASKS"}  # the default stream name, not a variable


def documented_rows() -> dict[str, str]:
    rows = {}
    for line in REFERENCE.read_text().splitlines():
        match = re.match(r"\| `(SWITCHYARD_[A-Z_]+)` \| ([^|]+) \|", line)
        if match:
            rows[match.group(1)] = match.group(2).strip()
    return rows


def test_doc001_every_setting_has_a_row_with_its_default():
    rows = documented_rows()
    defaults = {field.name: field.default for field in fields(Settings)}
    missing = [PREFIX + name for name in _FIELDS if PREFIX + name not in rows]
    assert missing == []
    for name, (attribute, _) in _FIELDS.items():
        default = defaults[attribute]
        if isinstance(default, (int, float, str)) and not isinstance(default, bool) and default != "":
            shown = f"{default:g}" if isinstance(default, float) else str(default)
            assert shown in rows[PREFIX + name], (name, shown, rows[PREFIX + name])


def test_doc002_every_variable_the_code_reads_is_in_the_reference():
    used = set()
    for path in [ROOT / "run.py", *ROOT.glob("core/**/*.py"), *ROOT.glob("dashboard/**/*.py"),
                 *ROOT.glob("db/**/*.py"), *ROOT.glob("tests/**/*.py"), *ROOT.glob("benchmarks/*.py")]:  # fmt: skip
        used |= set(VARIABLE.findall(path.read_text()))
    used |= {PREFIX + name for name in _FIELDS}
    assert sorted(used - NOT_SETTINGS - set(documented_rows())) == []


def test_doc003_relative_links_in_the_docs_resolve():
    broken = []
    for page in [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *ROOT.glob("docs/*.md")]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert broken == []
