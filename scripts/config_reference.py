"""Generate docs/config-reference.md from the config schema (so the reference cannot drift).

Usage: python scripts/config_reference.py [--check]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from pathlib import Path

from libcontinual.config import (
    AugmentConfig,
    ComponentConfig,
    DistributedConfig,
    ExperimentConfig,
    NormalizeConfig,
    _type_name,
)

OUTPUT = Path(__file__).resolve().parents[1] / "docs" / "config-reference.md"
SECTIONS = [
    (ExperimentConfig, ""),
    (ComponentConfig, "<component>."),
    (AugmentConfig, "augment."),
    (NormalizeConfig, "normalize."),
    (DistributedConfig, "distributed."),
]


def default_text(spec: dataclasses.Field) -> str:
    if spec.default is not dataclasses.MISSING:
        return "`null`" if spec.default is None else f"`{spec.default!r}`"
    if spec.default_factory is not dataclasses.MISSING:
        value = spec.default_factory()
        if dataclasses.is_dataclass(value):
            shown = {k: v for k, v in dataclasses.asdict(value).items() if v not in (None, {}, [])}
            return f"`{shown}`"
        return f"`{value!r}`"
    return "**required**"


def render() -> str:
    lines = [
        "# Config reference",
        "",
        "Generated from `libcontinual.config` by `python scripts/config_reference.py`;",
        "do not edit by hand. A config is a YAML file; `includes: [a.yaml, b.yaml]` merges other files",
        "first (paths relative to the including file; later files and the including file win).",
        "Command-line overrides: `key.sub=value`.",
        "`classifier:` is accepted as LibContinual's spelling of `method:`.",
        "A component (`dataset`, `backbone`,",
        "`method`, `buffer`, `optimizer`, `lr_scheduler`, `scenario`) is `{name, kwargs}`; its `kwargs` are",
        "checked against the constructor's parameters before anything runs.",
        "",
    ]
    for cls, prefix in SECTIONS:
        hints = typing.get_type_hints(cls)
        lines += [f"## `{cls.__name__}`", "", (cls.__doc__ or "").strip(), ""]
        lines += ["| key | type | default | meaning |", "|---|---|---|---|"]
        for spec in dataclasses.fields(cls):
            doc = spec.metadata.get("doc", "").replace("|", "\\|")
            kind = _type_name(hints[spec.name]).replace("|", "\\|")
            lines.append(f"| `{prefix}{spec.name}` | {kind} | {default_text(spec)} | {doc} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the file is out of date")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            sys.exit(f"{OUTPUT} is out of date: run python scripts/config_reference.py")
        return
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
