"""The FastAPI app of ``fghash serve``: routes, request models and error bodies.

Every error is ``{"error": "<one sentence>"}`` with a 4xx/5xx status (never a
traceback, never FastAPI's ``{"detail": [...]}``): validation errors 422, bad queries
400, unknown index or item 404, writes off or a path outside the data root 403, a
missing or wrong token 401, a body over ``--max-upload-mb`` 413. The contract is
``docs/serve.md``; ``/openapi.json`` describes it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from fghash import __version__
from fghash.errors import FghashError
from fghash.serve import registry, writes
from fghash.serve.images import Forbidden, ItemImageMissing, media_type
from fghash.serve.middleware import BodyLimit, Observe
from fghash.serve.queries import QueryError
from fghash.serve.service import Service, Settings

__all__ = ["AddBody", "RemoveBody", "SearchBody", "create_app"]

log = logging.getLogger(__name__)
STATIC = Path(__file__).with_name("static")
_STATUS: list[tuple[type[Exception], int]] = [
    (registry.UnknownIndex, 404),
    (registry.NotFound, 404),
    (ItemImageMissing, 404),
    (Forbidden, 403),
    (writes.WritesOff, 403),
    (writes.Unauthorized, 401),
    (QueryError, 400),
]


class SearchBody(BaseModel):
    """A batch of queries: exactly one of ``codes`` (hex), ``codes_b64``, ``ids``."""

    model_config = ConfigDict(extra="forbid", strict=True)
    codes: list[str] | None = None
    codes_b64: list[str] | None = None
    ids: list[int] | None = None
    k: int = 10
    nprobe: int | None = None
    ef_search: int | None = None
    nflip: int | None = None
    radius: int | None = None  # search by Hamming radius (k then unused)
    max_results: int | None = None  # with radius: results per query at most (default 1000)


class RemoveBody(BaseModel):
    """Items to remove, by id (flat, IVF and Milvus indexes)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    ids: list[int]


class AddBody(BaseModel):
    """New items: hex codes with their ids, and labels and paths where the index has them."""

    model_config = ConfigDict(extra="forbid", strict=True)
    codes: list[str]
    ids: list[int]
    labels: list[int] | list[list[int]] | None = None
    paths: list[str] | None = None


def _sentence(errors: list[Any]) -> str:
    """One sentence for the first of pydantic's validation errors."""
    if not errors:
        return "the request is not valid."
    e = errors[0]
    loc = [str(p) for p in e.get("loc", ()) if p != "body"]
    kind = e.get("type", "")
    if kind == "json_invalid":
        return "the request body is not valid JSON."
    if kind == "extra_forbidden":
        return f"unknown field {'.'.join(loc)!r}; see /openapi.json for the fields."
    if kind == "missing":
        return f"the field {'.'.join(loc)!r} is required."
    where = ".".join(loc) or "the body"
    return f"{where}: {str(e.get('msg', 'is not valid')).rstrip('.')}."


def _error(status: int, sentence: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": sentence}, status_code=status, headers=headers or None)


def _install_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, _sentence(list(exc.errors())))

    @app.exception_handler(ValidationError)
    async def invalid_model(request: Request, exc: ValidationError) -> JSONResponse:
        return _error(422, _sentence(list(exc.errors())))

    @app.exception_handler(FghashError)
    async def refused(request: Request, exc: FghashError) -> JSONResponse:
        status = next((s for cls, s in _STATUS if isinstance(exc, cls)), 400)
        extra = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
        return _error(status, str(exc), **extra)

    @app.exception_handler(HTTPException)
    async def http(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail).rstrip(".") + ".")

    @app.exception_handler(OSError)
    async def os_error(request: Request, exc: OSError) -> JSONResponse:
        from fghash.errors import os_error_sentence

        log.error("request failed: %s", os_error_sentence(exc))
        return _error(500, os_error_sentence(exc))

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        log.exception("request failed")
        return _error(500, f"internal error ({type(exc).__name__}); see the server's log.")


async def _uploads(files: list[UploadFile]) -> list[tuple[str, bytes]]:
    return [(f.filename or f"upload-{i}", await f.read()) for i, f in enumerate(files)]


def _read_routes(app: FastAPI, svc: Service) -> None:
    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "indexes": svc.registry.names()}

    @app.get("/indexes")
    def indexes() -> list[dict[str, Any]]:
        return [svc.describe(b) for b in svc.registry.bundles.values()]

    @app.post("/indexes/{name}/search")
    def search(name: str, body: SearchBody) -> dict[str, Any]:
        return svc.search(name, body.model_dump())

    @app.post("/indexes/{name}/search/image")
    async def search_image(
        name: str,
        images: Annotated[list[UploadFile], File()],
        k: Annotated[int, Query()] = 10,
        radius: Annotated[int | None, Query()] = None,
        max_results: Annotated[int | None, Query()] = None,
    ) -> dict[str, Any]:
        uploads = await _uploads(images)
        return await run_in_threadpool(svc.search_images, name, uploads, k, radius, max_results)

    @app.get("/indexes/{name}/items/{item_id}")
    def item(name: str, item_id: int) -> dict[str, Any]:
        return svc.item(name, item_id)

    @app.get("/indexes/{name}/items/{item_id}/image")
    def item_image(name: str, item_id: int) -> FileResponse:
        path = svc.item_image(name, item_id)
        return FileResponse(path, media_type=media_type(path))

    @app.get("/indexes/{name}/bits")
    def bits(name: str) -> dict[str, Any]:
        return svc.bits(svc.registry.get(name))

    @app.get("/metrics")
    def metrics() -> Response:
        body, kind = svc.metrics.render()
        return Response(body, media_type=kind)


def _write_routes(app: FastAPI, svc: Service) -> None:
    @app.post("/indexes/{name}/items")
    async def add(request: Request, name: str) -> dict[str, Any]:
        writes.check_token(svc.settings.token, request.headers.get("authorization"))
        svc.registry.get(name)
        kind = request.headers.get("content-type", "")
        if kind.startswith("multipart/form-data"):
            form = await request.form()
            unknown = sorted(set(form.keys()) - {"images", "label", "first_id"})
            if unknown:
                raise QueryError(f"unknown field {unknown[0]!r}; send images, label, first_id.")
            files = [f for f in form.getlist("images") if not isinstance(f, str)]
            if not files:
                raise QueryError("the request holds no images (multipart field 'images').")
            label, first_id = (_form_int(form.get(f), f) for f in ("label", "first_id"))
            uploads = await _uploads(files)  # type: ignore[arg-type]
            return await run_in_threadpool(svc.add_images, name, uploads, label, first_id)
        body = AddBody.model_validate_json(await request.body())
        return await run_in_threadpool(svc.add_codes, name, body.model_dump())

    @app.delete("/indexes/{name}/items/{item_id}")
    async def remove(request: Request, name: str, item_id: int) -> dict[str, Any]:
        writes.check_token(svc.settings.token, request.headers.get("authorization"))
        return await run_in_threadpool(svc.remove, name, [item_id], one=True)

    @app.post("/indexes/{name}/items/remove")
    async def remove_many(request: Request, name: str) -> dict[str, Any]:
        writes.check_token(svc.settings.token, request.headers.get("authorization"))
        body = RemoveBody.model_validate_json(await request.body())
        return await run_in_threadpool(svc.remove, name, body.ids)


def _form_int(value: Any, field: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(str(value))
    except ValueError:
        raise QueryError(f"the form field {field!r} must be an integer, got {value!r}.") from None


def create_app(reg: registry.Registry, settings: Settings | None = None) -> FastAPI:
    """The ASGI app serving the bundles of ``reg`` (loaded already) with ``settings``."""
    settings = settings or Settings()
    svc = Service(reg, settings)
    app = FastAPI(
        title="fghash serve",
        version=__version__,
        description="Search fghash index bundles by codes, ids or images. See docs/serve.md.",
    )
    app.state.service = svc
    _install_handlers(app)
    _read_routes(app, svc)
    _write_routes(app, svc)
    if STATIC.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> Response:
        index = STATIC / "index.html"
        if index.is_file():
            return FileResponse(index, media_type="text/html")
        return JSONResponse({"indexes": reg.names(), "api": "/openapi.json"})

    app.add_middleware(BodyLimit, max_bytes=int(settings.max_upload_mb * 2**20))
    app.add_middleware(Observe, metrics=svc.metrics)
    return app
