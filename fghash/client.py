"""A client for a running ``fghash serve``: the HTTP API (docs/serve.md) as Python calls.

Standard library only (:mod:`urllib.request`, :mod:`json`, multipart encoded by hand), so
it imports neither torch, FAISS nor numpy, and runs wherever Python does::

    from fghash.client import Client

    c = Client("http://127.0.0.1:8000")
    c.indexes()                                   # what the server holds
    c.search("demo", codes=["3f0a"], k=5)         # one dict per query, as `fghash search
    c.search("demo", ids=[150], k=5)              #   --format jsonl` prints them
    c.search_images("demo", ["bird.jpg"], k=5)    # encoded by the bundle's run, server side

Every failure is a :class:`fghash.errors.FghashError` of one sentence: the server's own
sentence for a refused request, or what went wrong on the way (nothing listens there, no
answer in time, an answer that is not the API's).
"""

from __future__ import annotations

import http.client
import json
import mimetypes
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from fghash.errors import FghashError, escape_bytes, os_error_sentence

__all__ = ["Client"]

PathLike = str | os.PathLike[str]


class Client:
    """Talks to the ``fghash serve`` at ``url`` (``http://host:port``, with or without a
    trailing slash or a path prefix). ``token`` is sent as ``Authorization: Bearer`` (only
    writes need it); ``timeout`` is in seconds per request."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 30) -> None:
        parts = urllib.parse.urlsplit(str(url).strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise FghashError(
                f"server URL {url!r} is not an http:// or https:// address; give it as "
                f"http://HOST:PORT, the address `fghash serve` prints."
            )
        if not timeout or timeout <= 0:
            raise FghashError(f"timeout must be a positive number of seconds, got {timeout!r}.")
        self.url = urllib.parse.urlunsplit(
            (parts.scheme, parts.netloc, parts.path.rstrip("/"), "", "")
        )
        self.token = token.strip() if token else None
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    # -- reading -------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """``{"status": "ok", "indexes": [names]}``."""
        return self._json("GET", "/health")

    def indexes(self) -> list[dict[str, Any]]:
        """One dict per served index: name, bits, ntotal, kind, backend, run, image_queries..."""
        return self._json("GET", "/indexes")

    def item(self, name: str, id: int) -> dict[str, Any]:
        """One item of index ``name``: ``{"id", "label", "path", "position", "code"}``."""
        return self._json("GET", f"/indexes/{_seg(name)}/items/{int(id)}")

    def item_image(self, name: str, id: int) -> bytes:
        """The image file of item ``id`` (from under the server's data root)."""
        return self._request("GET", f"/indexes/{_seg(name)}/items/{int(id)}/image")[1]

    def bits(self, name: str) -> dict[str, Any]:
        """``{"bits", "attribute_of_bit", "attribute_names"}`` of index ``name``."""
        return self._json("GET", f"/indexes/{_seg(name)}/bits")

    def search(
        self,
        name: str,
        codes: Sequence[str] | Any | None = None,
        ids: Iterable[int] | None = None,
        k: int = 10,
        **params: Any,
    ) -> list[dict[str, Any]]:
        """The ``k`` nearest items of index ``name`` to each query, one dict per query
        exactly as ``fghash search --format jsonl`` prints them.

        Queries are ``codes`` (hex strings as ``fghash search --code`` takes them, or a
        packed uint8 array ``[nq, ceil(bits/8)]``) or ``ids`` of database items (their own
        codes). ``params``: ``nprobe``, ``ef_search``, ``nflip``, and ``radius`` with
        ``max_results`` for a Hamming-radius search (``k`` then unused; each query's dict
        says ``"truncated"``); None values are left out.
        """
        if (codes is None) == (ids is None):
            raise FghashError("give the queries as codes or as ids: one of them, not both.")
        body: dict[str, Any] = {"k": k}
        if codes is not None:
            body["codes"] = _hex_codes(codes)
        else:
            body["ids"] = _int_list(ids, "ids")
        body.update({key: v for key, v in params.items() if v is not None})
        return self._json("POST", f"/indexes/{_seg(name)}/search", body)["results"]

    def search_images(
        self,
        name: str,
        paths: Sequence[PathLike],
        k: int = 10,
        radius: int | None = None,
        max_results: int | None = None,
    ) -> list[dict[str, Any]]:
        """Search index ``name`` with image files, encoded on the server by the bundle's
        run. One dict per image, as :meth:`search` (``radius``, ``max_results`` as
        there); each query's ``path`` is the file's name and its ``code`` the image's
        code in hex."""
        data, ctype = _multipart([("images", p) for p in paths], {})
        given = {"k": k, "radius": radius, "max_results": max_results}
        query = urllib.parse.urlencode({key: v for key, v in given.items() if v is not None})
        path = f"/indexes/{_seg(name)}/search/image?{query}"
        return self._json("POST", path, data, content_type=ctype)["results"]

    # -- writing (the server needs --allow-writes, and this client its token) ------------

    def add(
        self,
        name: str,
        codes: Sequence[str] | Any,
        ids: Iterable[int],
        labels: Sequence[Any] | Any | None = None,
        paths: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """Add items with these codes (hex or packed uint8), ids and optional labels and
        paths to index ``name``; returns ``{"added", "ntotal", "generation"}``."""
        body: dict[str, Any] = {"codes": _hex_codes(codes), "ids": _int_list(ids, "ids")}
        if labels is not None:
            body["labels"] = labels.tolist() if hasattr(labels, "tolist") else list(labels)
        if paths is not None:
            body["paths"] = [str(p) for p in paths]
        return self._json("POST", f"/indexes/{_seg(name)}/items", body)

    def remove(self, name: str, ids: Iterable[int]) -> dict[str, Any]:
        """Remove the items with ``ids`` from index ``name`` (flat, IVF, Milvus); returns
        ``{"removed", "ntotal", "generation"}``."""
        body = {"ids": _int_list(ids, "ids")}
        return self._json("POST", f"/indexes/{_seg(name)}/items/remove", body)

    def add_images(
        self,
        name: str,
        paths: Sequence[PathLike],
        label: int | None = None,
        first_id: int | None = None,
    ) -> dict[str, Any]:
        """Add image files to index ``name``, encoded on the server by the bundle's run."""
        given = (("label", label), ("first_id", first_id))
        fields = {key: str(int(v)) for key, v in given if v is not None}
        data, ctype = _multipart([("images", p) for p in paths], fields)
        return self._json("POST", f"/indexes/{_seg(name)}/items", data, content_type=ctype)

    # -- plumbing ------------------------------------------------------------------------

    def _json(
        self, method: str, path: str, body: Any = None, content_type: str | None = None
    ) -> Any:
        if body is not None and content_type is None:
            body, content_type = json.dumps(body).encode(), "application/json"
        status, data = self._request(method, path, body, content_type)
        try:
            return json.loads(data)
        except ValueError:
            raise FghashError(
                f"the server at {self.url} answered {method} {path} with something that is "
                f"not JSON (status {status}); is it an fghash server?"
            ) from None

    def _request(
        self, method: str, path: str, body: bytes | None = None, content_type: str | None = None
    ) -> tuple[int, bytes]:
        """Send one request; return (status, body) of a 2xx answer, else raise one sentence."""
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.url + path, data=body, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            raise FghashError(_server_sentence(e, method, path)) from None
        except urllib.error.URLError as e:
            raise FghashError(self._unreachable(e.reason)) from None
        except (TimeoutError, ConnectionError) as e:
            raise FghashError(self._unreachable(e)) from None
        except http.client.HTTPException as e:
            raise FghashError(
                f"the server at {self.url} did not answer in HTTP ({type(e).__name__}); "
                f"is it an fghash server?"
            ) from None

    def _unreachable(self, reason: Any) -> str:
        if isinstance(reason, ConnectionRefusedError):
            return (
                f"no server answers at {self.url} (connection refused); start one with "
                f"`fghash serve BUNDLE` or check the address."
            )
        if isinstance(reason, TimeoutError):
            return f"the server at {self.url} did not answer within {self.timeout:g} s."
        if isinstance(reason, socket.gaierror):
            return f"cannot find the host of {self.url} ({reason.strerror or reason})."
        text = getattr(reason, "strerror", None) or str(reason) or type(reason).__name__
        return f"cannot reach the server at {self.url}: {' '.join(str(text).split())}."


def _server_sentence(e: urllib.error.HTTPError, method: str, path: str) -> str:
    """The server's ``{"error": sentence}``, or what the status says when the body is not."""
    try:
        raw = e.read()
    except OSError:
        raw = b""
    try:
        sentence = json.loads(raw).get("error")
    except (ValueError, AttributeError):
        sentence = None
    if isinstance(sentence, str) and sentence.strip():
        return " ".join(sentence.split())
    return f"the server refused {method} {path.split('?')[0]}: HTTP {e.code} {e.reason}."


def _seg(name: str) -> str:
    """An index name as one URL path segment."""
    return urllib.parse.quote(str(name), safe="")


def _int_list(values: Iterable[int] | None, what: str) -> list[int]:
    values = values.tolist() if hasattr(values, "tolist") else list(values or [])
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int):
            raise FghashError(f"{what} must be integers, got {v!r}.")
        out.append(v)
    return out


def _hex_codes(codes: Sequence[str] | Any) -> list[str]:
    """Hex strings as given, or a packed uint8 array's rows as hex (byte 0 first)."""
    if isinstance(codes, str):
        return [codes]
    if hasattr(codes, "ndim") and hasattr(codes, "tobytes"):  # a numpy array
        if codes.ndim == 1:
            codes = codes.reshape(1, -1)
        if codes.ndim != 2 or str(codes.dtype) != "uint8":
            raise FghashError(
                f"codes must be packed uint8 [n, bytes], got {codes.dtype} {list(codes.shape)}."
            )
        return [bytes(row.tobytes()).hex() for row in codes]
    out = []
    for c in codes:
        if not isinstance(c, str):
            raise FghashError(f"codes must be hex strings or a packed uint8 array, got {c!r}.")
        out.append(c)
    return out


def _multipart(files: list[tuple[str, PathLike]], fields: dict[str, str]) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body of these form fields and files (read now)."""
    boundary = "fghash-" + uuid.uuid4().hex
    parts: list[bytes] = []
    for key, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n'.encode()
            + value.encode()
            + b"\r\n"
        )
    for key, path in files:
        try:
            with open(path, "rb") as f:
                content = f.read()
        except OSError as e:
            raise FghashError(os_error_sentence(e)) from None
        filename = escape_bytes(os.path.basename(os.fsdecode(path)))
        filename = filename.replace("\\", "%5C").replace('"', "%22").replace("\r", "%0D")
        filename = filename.replace("\n", "%0A")
        ctype = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"; '
            f'filename="{filename}"\r\nContent-Type: {ctype}\r\n\r\n'
        )
        parts.append(head.encode() + content + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"
