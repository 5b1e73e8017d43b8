"""API documentation generated from the command declarations (`make docs`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mgmt.api.registry import REGISTRY, Command


def page(cmd: Command) -> str:
    lines = [
        f"# {cmd.name}",
        "",
        cmd.description,
        "",
        "- asynchronous: "
        + ("yes (answers a jobid; poll queryAsyncJobResult)" if cmd.is_async else "no"),
        f"- roles: {', '.join(sorted(cmd.roles))}",
        f"- since: {cmd.since}",
    ]
    if cmd.response:
        lines.append(f"- response object: `{cmd.response}`")
    if cmd.list_key:
        lines.append(f"- list key: `{cmd.list_key}` (with `count`; an empty list answers `{{}}`)")
    lines += ["", "## Parameters", ""]
    if cmd.params:
        lines += ["| name | type | required | description |", "| --- | --- | --- | --- |"]
        for p in cmd.params:
            kind = f"list of {p.items or 'string'}" if p.type == "list" else p.type
            if p.choices:
                kind += " (" + ", ".join(p.choices) + ")"
            lines.append(f"| {p.name} | {kind} | {'yes' if p.required else 'no'} | "
                         f"{p.description} |")
    else:
        lines.append("None.")
    if cmd.response_fields:
        lines += ["", "## Response", "", "| name | type | description |", "| --- | --- | --- |"]
        lines += [f"| {n} | {t} | {d} |" for n, t, d in cmd.response_fields]
    return "\n".join(lines) + "\n"


def index() -> str:
    lines = ["# Skiff API", "", "The Apache CloudStack API as Skiff serves it.", "",
             "| command | async | description |", "| --- | --- | --- |"]
    for _key, cmd in sorted(REGISTRY.items()):
        lines.append(f"| [{cmd.name}]({cmd.name}.md) | {'yes' if cmd.is_async else ''} | "
                     f"{cmd.description} |")
    return "\n".join(lines) + "\n"


def write(out: Path) -> int:
    import mgmt.commands  # noqa: F401  (declares every command)

    out.mkdir(parents=True, exist_ok=True)
    for cmd in REGISTRY.values():
        (out / f"{cmd.name}.md").write_text(page(cmd))
    (out / "index.md").write_text(index())
    return len(REGISTRY)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a Markdown page per API command.")
    parser.add_argument("--out", type=Path, default=Path("docs/api"))
    args = parser.parse_args(argv)
    count = write(args.out)
    print(f"wrote {count} command pages and index.md to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
