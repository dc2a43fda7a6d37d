"""Configs shipped inside the package: `libcontinual run demo` works after a plain ``pip install``.

``src/libcontinual/configs`` is a link to the repository's ``configs/``: a wheel or sdist built from a clone
copies every YAML below it (pyproject's package-data globs), an editable install reads the clone itself, and a
config added under ``configs/`` ships without further registration. A checkout without symbolic links
(Windows without ``core.symlinks``) falls back to the clone's ``configs/`` next to ``src/``.
"""

from __future__ import annotations

import re
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
SUFFIX = ".yaml"
SENTENCE_END = re.compile(r"(?<! al)(?<!e\.g)(?<!i\.e)\.\s+(?=[A-Z(])")


def configs_dir() -> Path | None:
    """The folder of the shipped configs, or None when neither the package nor the clone has one."""
    for candidate in (_PACKAGE / "configs", _PACKAGE.parents[1] / "configs"):
        if (candidate / "demo.yaml").is_file():
            return candidate
    return None


def shipped_config(name: str) -> Path | None:
    """The shipped config a name means: ``demo``, ``icarl.yaml``, ``reproduce/r5/icarl`` or, as a README
    written for a clone says it, ``configs/demo.yaml``. None when there is no such shipped file."""
    root = configs_dir()
    if root is None or not name or Path(name).is_absolute():
        return None
    relative = name.replace("\\", "/").removeprefix("./").removeprefix("configs/")
    if not relative.endswith((SUFFIX, ".yml")):
        relative += SUFFIX
    path = (root / relative).resolve()
    if not path.is_file() or not path.is_relative_to(root.resolve()):
        return None
    return path


def shipped_names() -> list[str]:
    """Every shipped config as the name ``libcontinual run`` takes (headers included, marked by folder)."""
    root = configs_dir()
    if root is None:
        return []
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob(f"*{SUFFIX}"))


def description(path: Path, limit: int = 110) -> str:
    """The first sentence of a config file's leading comment: what it runs."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.strip()
        if not text.startswith("#"):
            break
        lines.append(text.lstrip("#").strip())
    comment = " ".join(lines)
    end = SENTENCE_END.search(comment)
    sentence = comment if end is None else comment[: end.start() + 1]
    return sentence if len(sentence) <= limit else sentence[: limit - 3].rstrip() + "..."


def is_header(name: str) -> bool:
    """Headers hold shared settings for ``includes:``; they are not complete experiments."""
    return "headers" in Path(name).parts
