"""`skiff router`: work with router documents offline (verify, render, schema)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from appliances.common.errors import DocumentError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("router", help="verify, render or check a router document offline",
                       description="Work with virtual-router documents without an agent.")
    rsub = p.add_subparsers(dest="router_command", metavar="ACTION", required=True)

    v = rsub.add_parser("verify", help="validate a document and list every problem")
    v.add_argument("file", type=Path, help="router document (JSON); - for stdin")
    v.set_defaults(func=_verify)

    r = rsub.add_parser("render", help="write the config files a document produces",
                        description="Write the nftables ruleset, the dnsmasq files and (with "
                        "load-balancer rules) haproxy.cfg and its certificates for a document.")
    r.add_argument("file", type=Path, help="router document (JSON); - for stdin")
    r.add_argument("--out", type=Path, required=True, help="directory to write into")
    r.add_argument("--check", action="store_true",
                   help="also run nft -c, dnsmasq --test and haproxy -c on the result "
                   "(needs root)")
    r.set_defaults(func=_render)

    s = rsub.add_parser("schema", help="print the document's JSON Schema")
    s.set_defaults(func=_schema)


def _load(path: Path):
    from appliances.router.verify import parse_document

    text = sys.stdin.read() if str(path) == "-" else path.read_text()
    try:
        return parse_document(json.loads(text))
    except json.JSONDecodeError as exc:
        raise SystemExit(f"{path}: not JSON: {exc}") from None
    except DocumentError as exc:
        for err in exc.errors:
            print(f"{err.loc}: {err.msg}", file=sys.stderr)
        raise SystemExit(f"{path}: {len(exc.errors)} problem(s); nothing was applied") from None


def _verify(args: argparse.Namespace) -> int:
    doc = _load(args.file)
    print(f"{args.file}: valid (router {doc.router_id}, generation {doc.generation})")
    return 0


def _render(args: argparse.Namespace) -> int:
    from appliances.agent.cli import DEFAULT_PORT
    from appliances.common.proc import run
    from appliances.router import nft_model, nft_render
    from appliances.router.services import dnsmasq
    from appliances.router.services.nftables import check_ruleset

    doc = _load(args.file)
    args.out.mkdir(parents=True, exist_ok=True)
    ruleset = args.out / "ruleset.nft"
    ruleset.write_text(nft_render.render_ruleset(nft_model.plan(doc, DEFAULT_PORT)))
    contents = dnsmasq.render(doc, str(args.out.resolve() / "dnsmasq"))
    (args.out / "dnsmasq").mkdir(exist_ok=True)
    for name, text in contents.items():
        (args.out / "dnsmasq" / name).write_text(text)
    print(f"wrote {ruleset} and {args.out / 'dnsmasq'}/")
    lb_config = _render_haproxy(doc, args.out) if doc.load_balancers else None
    if not args.check:
        return 0
    ok, output = asyncio.run(check_ruleset(str(ruleset)))
    print(f"nft -c: {'ok' if ok else 'REFUSED'}{': ' + output if output else ''}")
    check = args.out / "dnsmasq" / "check.conf"
    check.write_text(dnsmasq.check_config(contents))
    result = asyncio.run(run(["dnsmasq", "--test", f"--conf-file={check}"]))
    print(f"dnsmasq --test: {'ok' if result.ok else 'REFUSED: ' + result.output}")
    lb_ok = True
    if lb_config is not None:
        lb = asyncio.run(run(["haproxy", "-c", "-q", "-f", str(lb_config)]))
        lb_ok = lb.ok
        print(f"haproxy -c: {'ok' if lb.ok else 'REFUSED: ' + lb.output}")
    return 0 if ok and result.ok and lb_ok else 1


def _render_haproxy(doc, out: Path) -> Path:
    """haproxy.cfg and the certificates it names, under out/haproxy (keys mode 0600)."""
    from appliances.common.files import atomic_write
    from appliances.router.services import haproxy

    folder = (out / "haproxy").resolve()
    certs = {}
    for rule in doc.load_balancers:
        if rule.tls is not None:
            path, pem = haproxy.certificate_file(folder, rule)
            atomic_write(path, pem, mode=0o600)
            certs[rule.id] = path
    config = folder / "haproxy.cfg"
    atomic_write(config, haproxy.render(doc, folder, certs))
    print(f"wrote {config}")
    return config


def _schema(args: argparse.Namespace) -> int:
    from appliances.router.document import RouterDocument

    print(json.dumps(RouterDocument.model_json_schema(), indent=2))
    return 0
