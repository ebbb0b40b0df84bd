"""``odradek schemas subjects|versions|get|register|check|delete|config``: scripting any
Confluent-compatible schema registry over its v1 HTTP API (aiohttp client).

The registry is ``--url`` (or ``$ODRADEK_SCHEMA_REGISTRY_URL``, default
``http://127.0.0.1:8081``). Answers are printed as JSON, except lists of names and numbers
(one a line) and ids; a registry error becomes a one-line CliError with Confluent's code.
``check`` exits 1 when the schema is incompatible, so it can gate a build.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

from odradek.cli._common import CliError, Subparsers

__all__ = ["DEFAULT_URL", "URL_ENV", "add_commands"]

URL_ENV = "ODRADEK_SCHEMA_REGISTRY_URL"
DEFAULT_URL = "http://127.0.0.1:8081"
_CT = "application/vnd.schemaregistry.v1+json"


def add_commands(sub: Subparsers) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=os.environ.get(URL_ENV, DEFAULT_URL),
                        help=f"the registry (${URL_ENV}, default {DEFAULT_URL})")
    common.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    p = sub.add_parser("schemas", help="subjects, versions and configs of a schema registry")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    a = actions.add_parser("subjects", parents=[common], help="list subjects")
    a.add_argument("--deleted", action="store_true", help="include soft-deleted subjects")
    a.add_argument("--prefix", default="", help="only subjects starting with this")
    a.set_defaults(func=_subjects)

    a = actions.add_parser("versions", parents=[common], help="list a subject's versions")
    a.add_argument("subject")
    a.add_argument("--deleted", action="store_true", help="include soft-deleted versions")
    a.set_defaults(func=_versions)

    a = actions.add_parser("get", parents=[common], help="a version of a subject, or an id")
    a.add_argument("subject", nargs="?")
    a.add_argument("--version", default="latest", help="a number or latest (default)")
    a.add_argument("--id", type=int, help="get the schema with this global id instead")
    a.set_defaults(func=_get)

    for name, helptext in (("register", "register a schema under a subject"),
                           ("check", "test a schema against a subject's compatibility level")):
        a = actions.add_parser(name, parents=[common], help=helptext)
        a.add_argument("subject")
        a.add_argument("schema", help="a file holding the schema, or - for stdin")
        a.add_argument("--type", default="AVRO", choices=("AVRO", "JSON", "PROTOBUF"),
                       help="schemaType (default AVRO)")
        a.add_argument("--reference", action="append", default=[], metavar="NAME=SUBJECT:VERSION",
                       help="a schema this one references (repeatable)")
        a.add_argument("--normalize", action="store_true", help="normalize before storing")
        if name == "check":
            a.add_argument("--version", help="check against this version only (default: as "
                           "the level says)")
            a.set_defaults(func=_check)
        else:
            a.set_defaults(func=_register)

    a = actions.add_parser("delete", parents=[common], help="delete a subject or a version")
    a.add_argument("subject")
    a.add_argument("--version", help="only this version (a number or latest)")
    a.add_argument("--permanent", action="store_true",
                   help="hard delete (only after a soft delete)")
    a.set_defaults(func=_delete)

    a = actions.add_parser("config", parents=[common],
                           help="show or set the compatibility level (global or a subject's)")
    a.add_argument("subject", nargs="?")
    group = a.add_mutually_exclusive_group()
    group.add_argument("--set", metavar="LEVEL", help="NONE, BACKWARD, FORWARD, FULL, ..._TRANSITIVE")
    group.add_argument("--delete", action="store_true", help="remove the subject's own level")
    a.set_defaults(func=_config)


def _request(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    return asyncio.run(_request_async(args, method, path, body))


async def _request_async(args: argparse.Namespace, method: str, path: str, body: Any) -> Any:
    import aiohttp

    url = args.url.rstrip("/") + path
    data = json.dumps(body).encode() if body is not None else None
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session, session.request(
            method, url, data=data, headers={"Content-Type": _CT, "Accept": _CT}
        ) as resp:
            text = await resp.text()
            try:
                answer = json.loads(text)
            except json.JSONDecodeError:
                answer = text
            if resp.status >= 400:
                if isinstance(answer, dict) and "error_code" in answer:
                    raise CliError(f"{answer.get('message')} (error {answer['error_code']})")
                raise CliError(f"HTTP {resp.status}: {text[:200]}")
            return answer
    except (aiohttp.ClientError, TimeoutError) as e:
        raise CliError(f"cannot reach the registry at {args.url}: {e or type(e).__name__}") from None


def _s(subject: str) -> str:
    return quote(subject, safe="")


def _flag(name: str, on: bool) -> str:
    return f"{name}=true" if on else ""


def _query(*parts: str) -> str:
    kept = [p for p in parts if p]
    return "?" + "&".join(kept) if kept else ""


def _print_lines(values: list[Any]) -> None:
    for v in values:
        print(v)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def _subjects(args: argparse.Namespace) -> int:
    query = _query(_flag("deleted", args.deleted),
                   f"subjectPrefix={quote(args.prefix)}" if args.prefix else "")
    _print_lines(_request(args, "GET", "/subjects" + query))
    return 0


def _versions(args: argparse.Namespace) -> int:
    query = _query(_flag("deleted", args.deleted))
    _print_lines(_request(args, "GET", f"/subjects/{_s(args.subject)}/versions{query}"))
    return 0


def _get(args: argparse.Namespace) -> int:
    if args.id is not None:
        _print_json(_request(args, "GET", f"/schemas/ids/{args.id}"))
    elif args.subject:
        _print_json(_request(args, "GET", f"/subjects/{_s(args.subject)}/versions/{args.version}"))
    else:
        raise CliError("give a subject or --id")
    return 0


def _schema_body(args: argparse.Namespace) -> dict[str, Any]:
    try:
        text = sys.stdin.read() if args.schema == "-" else Path(args.schema).read_text()
    except OSError as e:
        raise CliError(f"cannot read {args.schema}: {e.strerror}") from None
    body: dict[str, Any] = {"schema": text}
    if args.type != "AVRO":
        body["schemaType"] = args.type
    refs = []
    for ref in args.reference:
        name, sep, rest = ref.partition("=")
        subject, sep2, version = rest.rpartition(":")
        if not sep or not sep2 or not version.isdigit():
            raise CliError(f"--reference {ref!r}: expected NAME=SUBJECT:VERSION")
        refs.append({"name": name, "subject": subject, "version": int(version)})
    if refs:
        body["references"] = refs
    return body


def _register(args: argparse.Namespace) -> int:
    query = _query(_flag("normalize", args.normalize))
    answer = _request(args, "POST", f"/subjects/{_s(args.subject)}/versions{query}",
                      _schema_body(args))
    print(answer["id"])
    return 0


def _check(args: argparse.Namespace) -> int:
    path = f"/compatibility/subjects/{_s(args.subject)}/versions"
    if args.version:
        path += f"/{args.version}"
    query = _query("verbose=true", _flag("normalize", args.normalize))
    answer = _request(args, "POST", path + query, _schema_body(args))
    if answer.get("is_compatible"):
        print("compatible")
        return 0
    print("incompatible")
    _print_lines(answer.get("messages") or [])
    return 1


def _delete(args: argparse.Namespace) -> int:
    query = _query(_flag("permanent", args.permanent))
    path = f"/subjects/{_s(args.subject)}"
    if args.version:
        path += f"/versions/{args.version}"
    answer = _request(args, "DELETE", path + query)
    _print_lines(answer if isinstance(answer, list) else [answer])
    return 0


def _config(args: argparse.Namespace) -> int:
    path = f"/config/{_s(args.subject)}" if args.subject else "/config"
    if args.set:
        _print_json(_request(args, "PUT", path, {"compatibility": args.set}))
    elif args.delete:
        _print_json(_request(args, "DELETE", path))
    else:
        query = "?defaultToGlobal=true" if args.subject else ""
        _print_json(_request(args, "GET", path + query))
    return 0
