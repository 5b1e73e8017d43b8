"""`skiff api`: a CloudMonkey-style shell for any CloudStack-compatible endpoint.

    skiff api list zones
    skiff api create network name=net1 zoneid=... networkofferingid=...
    skiff api                      # interactive, with completion

Verbs and nouns come from the server's listApis (cached per endpoint): an API
name splits at its first capital letter (listZones -> list zones). The endpoint
and keys come from the same environment variables and ini files as ``cs``
(CLOUDSTACK_ENDPOINT, CLOUDSTACK_KEY, CLOUDSTACK_SECRET, cloudstack.ini,
CLOUDSTACK_REGION). Async commands are waited for, with progress on stderr.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Any

CACHE_DIR = Path.home() / ".cache" / "skiff"
_SPLIT = re.compile(r"^([a-z]+)([A-Z].*)$")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "api",
        help="call the CloudStack API (CloudMonkey style)",
        description="Call any API command as VERB NOUN [name=value ...], e.g. "
        "'skiff api list zones' or 'skiff api create zone name=z1 networktype=Advanced'. "
        "Without a command, an interactive shell with completion starts. Endpoint and "
        "keys: CLOUDSTACK_ENDPOINT, CLOUDSTACK_KEY, CLOUDSTACK_SECRET or cloudstack.ini "
        "(as for the cs tool).",
    )
    p.add_argument("--output", "-o", choices=["json", "table"], default="json",
                   help="answer as JSON (default) or as a table of the listed objects")
    p.add_argument("--region", help="section of cloudstack.ini to use (default: cloudstack)")
    p.add_argument("--refresh", action="store_true",
                   help="fetch the command list from the server again")
    p.add_argument("words", nargs=argparse.REMAINDER, help="VERB NOUN [name=value ...]")
    p.set_defaults(func=_run)


def split_api_name(name: str) -> tuple[str, str] | None:
    m = _SPLIT.match(name)
    return (m.group(1), m.group(2).lower()) if m else None


class Shell:
    def __init__(self, client, refresh: bool = False, out=sys.stdout, err=sys.stderr):
        self.client = client
        self.out, self.err = out, err
        self.apis = self._load_apis(refresh)
        self.by_words = {
            words: api for api in self.apis if (words := split_api_name(api["name"]))
        }

    def _cache_path(self) -> Path:
        digest = hashlib.sha256(f"{self.client.endpoint} {self.client.key}".encode()).hexdigest()
        return CACHE_DIR / f"apis-{digest[:16]}.json"

    def _load_apis(self, refresh: bool) -> list[dict]:
        path = self._cache_path()
        if not refresh and path.exists():
            return json.loads(path.read_text())
        apis = self.client.listApis().get("api", [])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(apis))
        return apis

    def resolve(self, verb: str, noun: str) -> dict:
        api = self.by_words.get((verb.lower(), noun.lower()))
        if api is None:
            nouns = sorted(n for v, n in self.by_words if v == verb.lower())
            hint = f"; '{verb}' takes: {', '.join(nouns)}" if nouns else ""
            raise SystemExit(f"skiff api: no command '{verb} {noun}'{hint}")
        return api

    def call(self, words: list[str], output: str = "json") -> Any:
        if len(words) < 2:
            raise SystemExit("skiff api: say VERB NOUN [name=value ...], e.g. list zones")
        api = self.resolve(words[0], words[1])
        params: dict[str, str] = {}
        for word in words[2:]:
            name, sep, value = word.partition("=")
            if not sep:
                raise SystemExit(f"skiff api: '{word}' is not name=value")
            params[name] = value
        known = {p["name"].lower() for p in api.get("params", [])}
        unknown = [n for n in params if n.lower() not in known and "[" not in n]
        if unknown:
            raise SystemExit(
                f"skiff api: {api['name']} has no parameter {', '.join(unknown)}; "
                f"it takes: {', '.join(sorted(known)) or 'none'}"
            )
        answer = getattr(self.client, api["name"])(**params)
        if api.get("isasync") and isinstance(answer, dict) and "jobid" in answer:
            answer = self._wait(answer["jobid"])
        self.show(answer, output)
        return answer

    def _wait(self, jobid: str) -> Any:
        started = time.monotonic()
        while True:
            job = self.client.queryAsyncJobResult(jobid=jobid)
            if job.get("jobstatus") != 0:
                self.err.write("\n")
                if job.get("jobstatus") == 2:
                    result = job.get("jobresult", {})
                    raise SystemExit(f"skiff api: job {jobid} failed: "
                                     f"{result.get('errortext', result)}")
                return job.get("jobresult", job)
            self.err.write(f"\rwaiting for job {jobid}: {time.monotonic() - started:.0f} s")
            self.err.flush()
            time.sleep(1)

    def show(self, answer: Any, output: str) -> None:
        if output == "table":
            rows = _rows(answer)
            if rows:
                self.out.write(_table(rows))
                return
        self.out.write(json.dumps(answer, indent=2, sort_keys=True) + "\n")

    def interactive(self) -> int:
        import readline

        def complete(text: str, state: int):
            line = readline.get_line_buffer().split()
            # Verbs and nouns end with a space (not every readline build appends one).
            if len(line) <= 1 and not readline.get_line_buffer().endswith(" "):
                options = sorted({f"{v} " for v, _ in self.by_words if v.startswith(text)})
            elif len(line) == 1 or (
                len(line) == 2 and not readline.get_line_buffer().endswith(" ")
            ):
                options = sorted(
                    f"{n} " for v, n in self.by_words if v == line[0] and n.startswith(text)
                )
            else:
                api = self.by_words.get((line[0], line[1]), {})
                options = [f"{p['name']}=" for p in api.get("params", [])
                           if p["name"].startswith(text)]
            return options[state] if state < len(options) else None

        readline.set_completer(complete)
        readline.parse_and_bind("tab: complete")
        while True:
            try:
                line = input("skiff> ")
            except EOFError:
                return 0
            if line.strip() in ("exit", "quit"):
                return 0
            if line.strip():
                try:
                    self.call(shlex.split(line))
                except SystemExit as exc:
                    self.err.write(f"{exc}\n")
                except Exception as exc:  # the API's own error, shown and the shell goes on
                    self.err.write(f"error: {exc}\n")


def _rows(answer: Any) -> list[dict]:
    if isinstance(answer, dict):
        lists = [v for k, v in answer.items() if k != "count" and isinstance(v, list)]
        if len(lists) == 1:
            return [r for r in lists[0] if isinstance(r, dict)]
        objects = [v for v in answer.values() if isinstance(v, dict)]
        if len(objects) == 1:
            return objects
    return []


def _table(rows: list[dict]) -> str:
    columns = [c for c in ("id", "name", "state", "displaytext") if any(c in r for r in rows)]
    columns += [c for c in rows[0] if c not in columns and not isinstance(rows[0][c], dict | list)]
    columns = columns[:8]
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines) + "\n"


def _take_output_option(args: argparse.Namespace, words: list[str]) -> list[str]:
    """Allow -o/--output after the command words too (skiff api list zones -o table)."""
    rest = []
    i = 0
    while i < len(words):
        if words[i] in ("-o", "--output") and i + 1 < len(words):
            args.output = words[i + 1]
            i += 2
            continue
        if words[i].startswith("--output="):
            args.output = words[i].split("=", 1)[1]
        else:
            rest.append(words[i])
        i += 1
    if args.output not in ("json", "table"):
        raise SystemExit("skiff api: --output is json or table")
    return rest


def _run(args: argparse.Namespace) -> int:
    from cs.client import CloudStack, CloudStackApiException, read_config

    try:
        config = read_config(args.region)
    except (SystemExit, ValueError) as exc:
        raise SystemExit(
            f"skiff api: no endpoint configured ({exc}). Set CLOUDSTACK_ENDPOINT, "
            "CLOUDSTACK_KEY and CLOUDSTACK_SECRET, or write a cloudstack.ini "
            "(for Skiff's own server: skiff mgmt keys)"
        ) from None
    config.pop("name", None)
    client = CloudStack(**config)
    args.words = _take_output_option(args, list(args.words))
    try:
        shell = Shell(client, refresh=args.refresh)
        if not args.words:
            return shell.interactive()
        shell.call(args.words, args.output)
    except CloudStackApiException as exc:
        error = exc.error or {}
        print(f"skiff api: {error.get('errorcode', '')} {error.get('errortext', exc)}",
              file=sys.stderr)
        return 1
    return 0
