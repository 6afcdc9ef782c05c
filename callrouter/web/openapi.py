"""The OpenAPI 3.1 document, generated from the same `Route` list and pydantic models
the server uses (pydantic's JSON Schema is the 2020-12 dialect OpenAPI 3.1 speaks), and
a docs page rendered in the browser from it: one small static HTML file, nothing
fetched from anywhere but this daemon."""
from __future__ import annotations

import re
import typing
from importlib.resources import files
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

import callrouter

from .app import ALL_ROLES, SAFE_METHODS, Route
from .models import ErrorOut

_REF = "#/components/schemas/{model}"
_PARAM = re.compile(r"{(\w+)}")


def _model_of(t: Any) -> type[BaseModel] | None:
    if isinstance(t, type) and issubclass(t, BaseModel):
        return t
    args = typing.get_args(t)
    return _model_of(args[0]) if typing.get_origin(t) is list and args else None


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter is absent, never null: drop the null branch pydantic gives
    an optional field."""
    branches = schema.get("anyOf")
    if branches:
        rest = [b for b in branches if b.get("type") != "null"]
        if len(rest) == 1:
            out = {k: v for k, v in schema.items() if k != "anyOf"}
            out.update(rest[0])
            return out
    return schema


def _query_params(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template=_REF)
    required = set(schema.get("required", ()))
    params = []
    for name, prop in schema["properties"].items():
        prop = _without_null(prop)
        desc = prop.pop("description", None)
        prop.pop("title", None)
        p: dict[str, Any] = {"name": name, "in": "query", "required": name in required, "schema": prop}
        if desc:
            p["description"] = desc
        params.append(p)
    return params


def build_document(routes: list[Route]) -> dict[str, Any]:
    wanted: list[tuple[type[BaseModel], str]] = [(ErrorOut, "serialization")]
    for r in routes:
        if r.body is not None:
            wanted.append((r.body, "validation"))
        for t in (r.response, *r.alt.values()):
            m = _model_of(t)
            if m is not None:
                wanted.append((m, "serialization"))
    keys, defs = models_json_schema(list(dict.fromkeys(wanted)), ref_template=_REF)

    def ref(t: Any, mode: str) -> dict[str, Any]:
        m = _model_of(t)
        assert m is not None
        one = keys[(m, mode)]
        return {"type": "array", "items": one} if typing.get_origin(t) is list else one

    error = {"description": "error", "content": {"application/json": {"schema": ref(ErrorOut, "serialization")}}}
    paths: dict[str, dict[str, Any]] = {}
    for r in routes:
        if r.hidden:
            continue
        op: dict[str, Any] = {"summary": r.summary, "operationId": f"{r.method.lower()}_{r.handler.__module__.rsplit('.', 1)[-1]}_{r.handler.__name__}",
                              "tags": [r.tag]}
        params = [{"name": n, "in": "path", "required": True, "schema": {"type": "string", **r.extra.get(n, {})}}
                  for n in _PARAM.findall(r.path)]
        if r.query is not None:
            params += _query_params(r.query)
        if params:
            op["parameters"] = params
        if r.body is not None:
            op["requestBody"] = {"required": True,
                                 "content": {"application/json": {"schema": ref(r.body, "validation")}}}
        responses: dict[str, Any] = {}
        if r.response is not None:
            content: dict[str, Any] = {"application/json": {"schema": ref(r.response, "serialization")}}
            if r.csv:
                content["text/csv"] = {"schema": {"type": "string"}}
            responses[str(r.status)] = {"description": "ok", "content": content}
        elif r.media != "application/json":
            responses[str(r.status)] = {"description": "ok", "content": {r.media: {"schema": {"type": "string"}}}}
        else:
            responses[str(r.status)] = {"description": "done"}
        codes = set(r.errors)
        if r.body is not None or r.query is not None or r.extra:
            codes.add(400)
        if r.body is not None:
            codes |= {413, 415}
        if r.roles:
            codes.add(401)
            if r.roles != ALL_ROLES or r.method not in SAFE_METHODS:
                codes.add(403)  # a role that may not, or a cookie session without its CSRF token
            op["security"] = [{"bearer": []}, {"session": []}]
        else:
            op["security"] = []
        if _PARAM.search(r.path):
            codes.add(404)
        for code in sorted(codes):
            alt = r.alt.get(code)
            responses[str(code)] = error if alt is None else {
                "description": "see body", "content": {"application/json": {"schema": ref(alt, "serialization")}}}
        op["responses"] = responses
        paths.setdefault(r.path, {})[r.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "callrouter", "version": _version(),
                 "description": "The CRM's way in: clients, managers, calls, operations. "
                                "Tokens: `callrouter users add NAME --role ...`."},
        "paths": paths,
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "a token from `callrouter users add`"},
                "session": {"type": "apiKey", "in": "cookie", "name": "callrouter_session",
                            "description": "from POST /login; state-changing requests also need X-CSRF-Token"},
            },
        },
        "security": [{"bearer": []}, {"session": []}],
    }


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("callrouter")
    except PackageNotFoundError:
        return "0"


def docs_page() -> str:
    return files(callrouter).joinpath("web/static/docs.html").read_text(encoding="utf-8")
