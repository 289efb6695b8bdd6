"""Generated parts of the README: ``python -m fusebox.docs [--write]``.

Today one part: the table of meter models, generated from the registry
(``protocols.meters.meter_models_markdown``) between its two marker lines. Without
``--write`` the command prints the table and exits 1 when the README's differs;
with ``--write`` it rewrites the README's table in place.
``tests/unit/test_meter_registry.py`` fails while they differ.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from protocols.meters import MARKDOWN_BEGIN, MARKDOWN_END, meter_models_markdown

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_meter_table(readme_text: str) -> str:
    """The README's table of meter models, marker lines included; ``ValueError``
    if the markers are missing or out of order."""
    start = readme_text.find(MARKDOWN_BEGIN)
    end = readme_text.find(MARKDOWN_END, start)
    if start < 0 or end < 0:
        raise ValueError(
            f"the README has no meter table between {MARKDOWN_BEGIN!r} and "
            f"{MARKDOWN_END!r}"
        )
    return readme_text[start : end + len(MARKDOWN_END)] + "\n"


def with_meter_table(readme_text: str) -> str:
    """``readme_text`` with its table of meter models replaced by the generated one."""
    old = readme_meter_table(readme_text)
    return readme_text.replace(old, meter_models_markdown(), 1)


def main(argv: list[str] | None = None) -> int:
    """Print the generated table (exit 1 if the README's differs) or, with
    ``--write``, put it into the README."""
    parser = argparse.ArgumentParser(prog="python -m fusebox.docs", description=__doc__)
    parser.add_argument("--write", action="store_true", help="rewrite the README")
    parser.add_argument("--readme", type=Path, default=README)
    args = parser.parse_args(argv)
    text = args.readme.read_text(encoding="utf-8")
    if args.write:
        new = with_meter_table(text)
        if new != text:
            args.readme.write_text(new, encoding="utf-8")
            print(f"{args.readme}: meter table updated")
        return 0
    sys.stdout.write(meter_models_markdown())
    if readme_meter_table(text) != meter_models_markdown():
        print(f"{args.readme}: differs; run with --write", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
