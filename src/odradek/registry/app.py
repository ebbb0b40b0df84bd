"""The registry's HTTP API (aiohttp): Confluent's v1 routes, parameters, content types and error
bodies.

Handlers are thin: they read path, query and body, call
:class:`~odradek.registry.service.SchemaRegistry`, and shape its answer. Every failure is turned
into Confluent's ``{"error_code": ..., "message": ...}`` in one place, :func:`_errors`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from odradek.registry import associations, errors
from odradek.registry.election import PrimaryElector
from odradek.registry.errors import RegistryError
from odradek.registry.records import SchemaValue, schema_guid
from odradek.registry.service import SchemaRegistry, SchemaRequest, parse_version
from odradek.registry.state import context_of

__all__ = ["CONTENT_TYPE", "DEFAULT_MAX_BODY_BYTES", "FORWARDED_HEADER", "make_app"]

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
#: The largest request body accepted; a larger one is answered 413 before it is read.
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
_REGISTRY: web.AppKey[SchemaRegistry] = web.AppKey("registry", SchemaRegistry)
_ELECTOR: web.AppKey[PrimaryElector | None] = web.AppKey("elector")
#: Marks a request one instance forwarded to the primary, so it is never forwarded again.
FORWARDED_HEADER = "X-Odradek-Forwarded"
_log = logging.getLogger("odradek.registry.app")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=json.dumps(body).encode(), content_type=CONTENT_TYPE
    )


def _error(status: int, code: int, message: str) -> web.Response:
    return _json({"error_code": code, "message": message}, status)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except RegistryError as e:
        return _error(e.status, e.error_code, e.message)
    except web.HTTPRequestEntityTooLarge as e:
        return _error(413, 413, f"Request body too large: {e.text}")
    except web.HTTPException as e:
        if e.status >= 400:
            return _error(e.status, e.status, e.reason)
        raise
    except Exception:
        _log.exception("%s %s failed", request.method, request.path)
        return _error(500, 50001, "Error in the backend data store")


@web.middleware
async def _forward(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Writes go to the primary: handled here when this instance is it, forwarded otherwise."""
    elector = request.app[_ELECTOR]
    if request.match_info.handler not in _WRITES:
        return await handler(request)
    if elector is None:
        # The only instance, as far as it knows. A write fenced by another that claimed the
        # writer since is tried once more (claiming it back, deciding afresh): two stand-alone
        # instances on one topic take turns rather than overwrite each other.
        try:
            return await handler(request)
        except errors.FencedError:
            return await handler(request)
    deadline = time.monotonic() + elector.timeout
    unreachable: str | None = None
    while True:
        url = await elector.primary_url()
        if url == elector.url and elector.is_primary:
            try:
                return await handler(request)
            except errors.FencedError:
                # Deposed while the write was in flight: the new primary has claimed the
                # writer and nothing of this write is in the log; ask the group again.
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(0.2)
                continue
        if url is not None and url != elector.url and FORWARDED_HEADER not in request.headers:
            try:
                return await _forward_to(request, url)
            except aiohttp.ClientConnectionError as e:
                # A primary that died is named by the group until its session times out; the
                # request never reached it, so it is retried until the group names another.
                unreachable = f"Error while forwarding the request to the primary {url}: {e}"
        if time.monotonic() >= deadline:
            if unreachable is not None:
                raise errors.RegistryError(500, 50003, unreachable)
            raise errors.unknown_primary(f"no primary in group {elector.group_id}")
        await asyncio.sleep(0.2)  # a rebalance is under way: the group names a primary soon


async def _forward_to(request: web.Request, url: str) -> web.Response:
    body = await request.read()
    headers = {"Content-Type": request.headers.get("Content-Type", CONTENT_TYPE),
               FORWARDED_HEADER: "1"}
    connected = False
    try:
        async with aiohttp.ClientSession() as session, session.request(
            request.method, url.rstrip("/") + request.path_qs, data=body, headers=headers
        ) as resp:
            connected = True
            answer = await resp.read()
            return web.Response(status=resp.status, body=answer, content_type=CONTENT_TYPE)
    except aiohttp.ClientConnectorError:
        raise  # not connected: the caller may try again
    except (aiohttp.ClientError, TimeoutError) as e:
        where = "after sending" if connected else "while sending"
        raise errors.RegistryError(
            500, 50003, f"Error while forwarding the request to the primary {url} ({where}): {e}"
        ) from None


def _registry(request: web.Request) -> SchemaRegistry:
    return request.app[_REGISTRY]


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "false").lower() == "true"


def _optional_flag(request: web.Request, name: str) -> bool | None:
    value = request.query.get(name)
    return None if value is None else value.lower() == "true"


async def _body(request: web.Request) -> Any:
    raw = await request.read()
    try:
        return json.loads(raw) if raw else {}
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise errors.bad_request(f"Unrecognized body: {e}") from None


async def _object_body(request: web.Request) -> dict[str, Any]:
    body = await _body(request)
    if not isinstance(body, dict):
        raise errors.bad_request("the body must be a JSON object")
    return body


def _schema_fields(sv: SchemaValue) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if sv.schema_type != "AVRO":
        out["schemaType"] = sv.schema_type
    if sv.references:
        out["references"] = [r.to_json() for r in sv.references]
    if sv.metadata is not None:
        out["metadata"] = sv.metadata
    if sv.rule_set is not None:
        out["ruleSet"] = sv.rule_set
    out["schema"] = sv.schema
    return out


def _version_body(sv: SchemaValue) -> dict[str, Any]:
    return {"subject": sv.subject, "version": sv.version, "id": sv.id, "guid": schema_guid(sv),
            **_schema_fields(sv)}


def _schema_id(request: web.Request) -> int:
    try:
        return int(request.match_info["id"])
    except ValueError:
        raise errors.schema_not_found() from None


# -- root, types, contexts --------------------------------------------------------------------

async def root(request: web.Request) -> web.Response:
    return _json({})


async def schema_types(request: web.Request) -> web.Response:
    return _json(_registry(request).schema_types())


async def contexts(request: web.Request) -> web.Response:
    """Confluent's contexts: ``.`` and those that subjects name (``:.ctx:subject``); each
    numbers its ids apart, as Confluent's do."""
    registry = await _read(request)
    return _json(_page(request, registry.state.contexts()))


# -- /schemas ---------------------------------------------------------------------------------

async def _read(request: web.Request) -> SchemaRegistry:
    registry = _registry(request)
    await registry.store.read_to_end()
    return registry


def _by_id(registry: SchemaRegistry, request: web.Request) -> SchemaValue:
    schema_id = _schema_id(request)
    subject = request.query.get("subject")
    # Ids are numbered per context: the subject (if any) says which context's id is meant.
    context = registry.state.context_holding(schema_id, subject)
    if subject:
        for user in registry.state.users_of(schema_id, deleted=True, context=context):
            if user.subject == subject:
                return user
    found = registry.state.by_id(schema_id, context)
    if found is None:
        raise errors.schema_not_found()
    return found


async def _read_by_id(request: web.Request) -> tuple[SchemaRegistry, SchemaValue]:
    """The schema an id names. An id names one schema for ever, so one this instance holds is
    answered without reading the log to its end (the serializers' hot path); an id it does not
    hold yet may have been written by another instance a moment ago, so that reads first."""
    registry = _registry(request)
    try:
        return registry, _by_id(registry, request)
    except RegistryError:
        await registry.store.read_to_end()
        return registry, _by_id(registry, request)


async def schema_by_id(request: web.Request) -> web.Response:
    if _flag(request, "fetchMaxId"):
        registry = await _read(request)
        sv = _by_id(registry, request)
    else:
        registry, sv = await _read_by_id(request)
    body = {"guid": schema_guid(sv), **_schema_fields(sv)}
    fmt = request.query.get("format")
    if fmt:
        body["schema"] = _formatted(registry, sv, fmt)
    if _flag(request, "fetchMaxId"):
        body["maxId"] = registry.state.max_id(context_of(sv.subject))
    return _json(body)


def _formatted(registry: SchemaRegistry, sv: SchemaValue, fmt: str) -> str:
    """The schema in Confluent's ``format``: what the parsed schema offers under that name
    (Avro's ``resolved``, references written out; a format module's ``serialized``), or
    ``canonical``/``normalized`` for every format; the stored text for a name none offers."""
    # The format interface has only canonical() and normalized(); the format-specific renderings
    # are found by name on the parsed schema.
    if fmt not in ("canonical", "normalized", "resolved", "serialized", "default"):
        return sv.schema
    parsed = registry.parse(sv.schema_type, sv.schema, sv.references)
    render = getattr(parsed, fmt, None)
    return str(render()) if callable(render) else sv.schema


async def schema_by_guid(request: web.Request) -> web.Response:
    """``/schemas/guids/{guid}``: the schema with that fingerprint, as by id plus its id."""
    registry = _registry(request)
    guid = request.match_info["guid"].lower()
    sv = registry.state.by_guid(guid)
    if sv is None:  # perhaps written by another instance a moment ago
        await registry.store.read_to_end()
        sv = registry.state.by_guid(guid)
    if sv is None:
        raise errors.schema_not_found()
    body = {"id": sv.id, "guid": guid, **_schema_fields(sv)}
    fmt = request.query.get("format")
    if fmt:
        body["schema"] = _formatted(registry, sv, fmt)
    return _json(body)


async def ids_by_guid(request: web.Request) -> web.Response:
    """``/schemas/guids/{guid}/ids``: the id the schema has in each context holding it."""
    registry = await _read(request)
    found = registry.state.ids_for_guid(request.match_info["guid"].lower())
    return _json([{"context": context, "id": schema_id} for context, schema_id in found])


async def delete_context(request: web.Request) -> web.Response:
    await _registry(request).delete_context(request.match_info["context"])
    return web.Response(status=204)


async def schema_text_by_id(request: web.Request) -> web.Response:
    registry, sv = await _read_by_id(request)
    fmt = request.query.get("format")
    text = _formatted(registry, sv, fmt) if fmt else sv.schema
    return web.Response(body=text.encode(), content_type=CONTENT_TYPE)


async def subjects_by_id(request: web.Request) -> web.Response:
    registry = await _read(request)
    schema_id = _schema_id(request)
    subject = request.query.get("subject")
    users = registry.state.users_of(
        schema_id, deleted=_flag(request, "deleted"),
        context=registry.state.context_holding(schema_id, subject),
    )
    if not users:
        raise errors.schema_not_found()
    # As Confluent's, ``subject`` names the context, not a filter on the subjects.
    return _json(sorted({sv.subject for sv in users}))


async def versions_by_id(request: web.Request) -> web.Response:
    registry = await _read(request)
    schema_id = _schema_id(request)
    users = registry.state.users_of(
        schema_id, deleted=_flag(request, "deleted"),
        context=registry.state.context_holding(schema_id, request.query.get("subject")),
    )
    if not users:
        raise errors.schema_not_found()
    return _json([{"subject": sv.subject, "version": sv.version} for sv in users])


async def list_schemas(request: web.Request) -> web.Response:
    registry = await _read(request)
    prefix = request.query.get("subjectPrefix", "")
    deleted = _flag(request, "deleted")
    latest_only = _flag(request, "latestOnly")
    out = []
    for subject in registry.list_subjects(deleted=deleted, prefix=prefix):
        versions = registry.state.versions(subject, deleted=deleted)
        for sv in versions[-1:] if latest_only else versions:
            out.append(_version_body(sv))
    return _json(out)


# -- /subjects --------------------------------------------------------------------------------

def _deleted_only(request: web.Request) -> bool:
    # Confluent's docs spell it deletedOnly; confluent-kafka-python sends deleted_only.
    return _flag(request, "deletedOnly") or _flag(request, "deleted_only")


def _page(request: web.Request, items: list[Any]) -> list[Any]:
    """Confluent's ``offset`` and ``limit`` (a negative limit: no limit)."""
    try:
        offset = max(0, int(request.query.get("offset", "0")))
        limit = int(request.query.get("limit", "-1"))
    except ValueError:
        raise errors.bad_request("offset and limit must be integers") from None
    return items[offset:] if limit < 0 else items[offset:offset + limit]


async def list_subjects(request: web.Request) -> web.Response:
    registry = await _read(request)
    return _json(_page(request, registry.list_subjects(
        deleted=_flag(request, "deleted"),
        deleted_only=_deleted_only(request),
        prefix=request.query.get("subjectPrefix", ""),
    )))


async def list_versions(request: web.Request) -> web.Response:
    registry = await _read(request)
    return _json(_page(request, registry.list_versions(
        request.match_info["subject"],
        deleted=_flag(request, "deleted"),
        deleted_only=_deleted_only(request),
    )))


async def latest_with_metadata(request: web.Request) -> web.Response:
    """The latest version whose ``metadata.properties`` hold every ``key``/``value`` pair."""
    registry = await _read(request)
    keys, values = request.query.getall("key", []), request.query.getall("value", [])
    if len(keys) != len(values):
        raise errors.bad_request("every key needs a value")
    wanted = dict(zip(keys, values, strict=True))
    subject = request.match_info["subject"]
    versions = registry.state.versions(subject, deleted=_flag(request, "deleted"))
    if not versions:
        raise errors.subject_not_found(subject)
    for sv in reversed(versions):
        props = (sv.metadata or {}).get("properties") or {} if isinstance(sv.metadata, dict) else {}
        if all(props.get(k) == v for k, v in wanted.items()):
            return _json(_version_body(sv))
    raise errors.schema_not_found(f"No version of subject {subject} has that metadata")


async def register(request: web.Request) -> web.Response:
    registry = _registry(request)
    req = SchemaRequest.from_json(await _body(request))
    sv = await registry.register(
        request.match_info["subject"], req, normalize=_optional_flag(request, "normalize")
    )
    return _json({"id": sv.id, "guid": schema_guid(sv)})


async def lookup(request: web.Request) -> web.Response:
    registry = _registry(request)
    req = SchemaRequest.from_json(await _body(request))
    sv = await registry.lookup(
        request.match_info["subject"], req,
        normalize=_optional_flag(request, "normalize"), deleted=_flag(request, "deleted"),
    )
    return _json(_version_body(sv))


async def get_version(request: web.Request) -> web.Response:
    registry = await _read(request)
    sv = registry.get_version(
        request.match_info["subject"], request.match_info["version"],
        deleted=_flag(request, "deleted"),
    )
    return _json(_version_body(sv))


async def get_version_schema(request: web.Request) -> web.Response:
    registry = await _read(request)
    sv = registry.get_version(
        request.match_info["subject"], request.match_info["version"],
        deleted=_flag(request, "deleted"),
    )
    return web.Response(body=sv.schema.encode(), content_type=CONTENT_TYPE)


async def referenced_by(request: web.Request) -> web.Response:
    registry = await _read(request)
    sv = registry.get_version(
        request.match_info["subject"], request.match_info["version"], deleted=True
    )
    return _json(registry.state.referenced_by(sv.subject, sv.version))


async def delete_version(request: web.Request) -> web.Response:
    version = await _registry(request).delete_version(
        request.match_info["subject"], request.match_info["version"],
        permanent=_flag(request, "permanent"),
    )
    return _json(version)


async def delete_subject(request: web.Request) -> web.Response:
    versions = await _registry(request).delete_subject(
        request.match_info["subject"], permanent=_flag(request, "permanent")
    )
    return _json(versions)


# -- /compatibility ---------------------------------------------------------------------------

async def compatibility(request: web.Request) -> web.Response:
    registry = _registry(request)
    version = request.match_info.get("version")
    if version is not None:
        parse_version(version)  # 42202 before the body is looked at
    req = SchemaRequest.from_json(await _body(request))
    messages = await registry.test_compatibility(
        request.match_info["subject"], version, req,
        normalize=_optional_flag(request, "normalize"),
    )
    body: dict[str, Any] = {"is_compatible": not messages}
    if _flag(request, "verbose"):
        body["messages"] = messages
    return _json(body)


# -- /config and /mode ------------------------------------------------------------------------

def _subject_or_global(request: web.Request) -> str | None:
    return request.match_info.get("subject")


async def get_config(request: web.Request) -> web.Response:
    registry = await _read(request)
    return _json(registry.get_config(
        _subject_or_global(request), default_to_global=_flag(request, "defaultToGlobal")
    ))


async def put_config(request: web.Request) -> web.Response:
    registry = _registry(request)
    return _json(await registry.put_config(_subject_or_global(request), await _object_body(request)))


async def delete_config(request: web.Request) -> web.Response:
    return _json(await _registry(request).delete_config(_subject_or_global(request)))


async def get_mode(request: web.Request) -> web.Response:
    registry = await _read(request)
    return _json(registry.get_mode(
        _subject_or_global(request), default_to_global=_flag(request, "defaultToGlobal")
    ))


async def put_mode(request: web.Request) -> web.Response:
    registry = _registry(request)
    return _json(await registry.put_mode(
        _subject_or_global(request), await _object_body(request), force=_flag(request, "force")
    ))


async def delete_mode(request: web.Request) -> web.Response:
    return _json(await _registry(request).delete_mode(_subject_or_global(request)))


# -- /associations -----------------------------------------------------------------------------

async def create_associations(request: web.Request) -> web.Response:
    return _json(await associations.create_associations(
        _registry(request), await _body(request), dry_run=_association_flag(request, "dryRun")
    ))


async def find_associations(request: web.Request) -> web.Response:
    found = await associations.find_associations(
        _registry(request), request.match_info["namespace"], request.match_info["name"],
        resource_type=request.query.get("resourceType") or None,
        association_types=request.query.getall("associationType", []),
        lifecycle=request.query.get("lifecycle") or None,
    )
    return _json(_page(request, found))


async def associations_by_resource_id(request: web.Request) -> web.Response:
    found = await associations.find_by_resource_id(
        _registry(request), request.match_info["resource_id"],
        resource_type=request.query.get("resourceType") or None,
        association_types=request.query.getall("associationType", []),
        lifecycle=request.query.get("lifecycle") or None,
    )
    return _json(_page(request, found))


async def associations_by_subject(request: web.Request) -> web.Response:
    found = await associations.find_by_subject(
        _registry(request), request.match_info["subject"],
        resource_type=request.query.get("resourceType") or None,
        association_types=request.query.getall("associationType", []),
        lifecycle=request.query.get("lifecycle") or None,
    )
    return _json(_page(request, found))


def _association_flag(request: web.Request, name: str) -> bool:
    value = request.query.get(name, "false").lower()
    if value not in ("true", "false"):
        raise errors.invalid_association(name, f"must be true or false, not {value!r}")
    return value == "true"


async def delete_associations(request: web.Request) -> web.Response:
    await associations.delete_associations(
        _registry(request), request.match_info["resource_id"],
        resource_type=request.query.get("resourceType") or None,
        association_types=request.query.getall("associationType", []),
        cascade_lifecycle=_association_flag(request, "cascadeLifecycle"),
        dry_run=_association_flag(request, "dryRun"),
    )
    return web.Response(status=204)


#: The handlers that write to ``_schemas``: only the primary runs them.
_WRITES: frozenset[Callable[..., Any]] = frozenset({
    register, delete_version, delete_subject, put_config, delete_config, put_mode, delete_mode,
    create_associations, delete_associations, delete_context,
})


def make_app(
    registry: SchemaRegistry,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    elector: PrimaryElector | None = None,
) -> web.Application:
    """The aiohttp application serving ``registry``; with an ``elector``, writes are forwarded
    to the primary it names (without one, this instance is the only one)."""
    app = web.Application(middlewares=[_errors, _forward], client_max_size=max_body_bytes)
    app[_REGISTRY] = registry
    app[_ELECTOR] = elector
    r = app.router
    r.add_get("/", root)
    r.add_get("/schemas/types", schema_types)
    r.add_get("/contexts", contexts)
    r.add_get("/schemas", list_schemas)
    r.add_get("/schemas/ids/{id}", schema_by_id)
    r.add_get("/schemas/ids/{id}/schema", schema_text_by_id)
    r.add_get("/schemas/ids/{id}/subjects", subjects_by_id)
    r.add_get("/schemas/ids/{id}/versions", versions_by_id)
    r.add_get("/schemas/guids/{guid}", schema_by_guid)
    r.add_get("/schemas/guids/{guid}/ids", ids_by_guid)
    r.add_delete("/contexts/{context}", delete_context)
    r.add_get("/subjects", list_subjects)
    r.add_post("/subjects/{subject}", lookup)
    r.add_delete("/subjects/{subject}", delete_subject)
    r.add_get("/subjects/{subject}/versions", list_versions)
    r.add_get("/subjects/{subject}/metadata", latest_with_metadata)
    r.add_post("/subjects/{subject}/versions", register)
    r.add_get("/subjects/{subject}/versions/{version}", get_version)
    r.add_delete("/subjects/{subject}/versions/{version}", delete_version)
    r.add_get("/subjects/{subject}/versions/{version}/schema", get_version_schema)
    r.add_get("/subjects/{subject}/versions/{version}/referencedby", referenced_by)
    r.add_post("/compatibility/subjects/{subject}/versions", compatibility)
    r.add_post("/associations", create_associations)
    r.add_get("/associations/resources/{namespace}/{name}", find_associations)
    r.add_get("/associations/resources/{resource_id}", associations_by_resource_id)
    r.add_get("/associations/subjects/{subject}", associations_by_subject)
    r.add_delete("/associations/resources/{resource_id}", delete_associations)
    r.add_post("/compatibility/subjects/{subject}/versions/{version}", compatibility)
    for path in ("/config", "/config/{subject}"):
        r.add_get(path, get_config)
        r.add_put(path, put_config)
        r.add_delete(path, delete_config)
    for path in ("/mode", "/mode/{subject}"):
        r.add_get(path, get_mode)
        r.add_put(path, put_mode)
        r.add_delete(path, delete_mode)
    return app
