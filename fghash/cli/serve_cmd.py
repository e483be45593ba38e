"""``fghash serve``: index bundles as an HTTP retrieval service (FastAPI on uvicorn)."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import click

from fghash.cli._app import main
from fghash.cli._options import device_option, threads_option
from fghash.errors import FghashError

__all__ = ["serve_cmd"]


@main.command("serve")
@click.argument(
    "bundles", metavar="BUNDLE...", nargs=-1, required=True, type=click.Path(path_type=Path)
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8000,
    show_default=True,
    help="Port to listen on; 0 picks a free one (the URL printed says which).",
)
@click.option(
    "--name",
    "names",
    multiple=True,
    help="Name of each BUNDLE in the API, in order (repeatable) [default: the folder name].",
)
@device_option()
@click.option(
    "--data-root",
    type=click.Path(file_okay=False),
    help="Folder the items' image paths are relative to [default: the run's data root].",
)
@click.option(
    "--allow-writes", is_flag=True, help="Accept POST .../items (with the --token-file token)."
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File holding the bearer token writes must send (needed by --allow-writes).",
)
@click.option(
    "--max-upload-mb",
    type=click.FloatRange(min=0, min_open=True),
    default=20.0,
    show_default=True,
    help="Largest request body (images included); larger ones get 413.",
)
@click.option(
    "--max-queries",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Most queries (codes, ids or images) in one request.",
)
@threads_option()
def serve_cmd(
    bundles: tuple[Path, ...],
    host: str,
    port: int,
    names: tuple[str, ...],
    device: str,
    data_root: str | None,
    allow_writes: bool,
    token_file: Path | None,
    max_upload_mb: float,
    max_queries: int,
    threads: int | None,
) -> None:
    """Serve the index bundles BUNDLE... over HTTP until SIGTERM or Ctrl-C.

    Each bundle is opened once, as `fghash search` opens it, and reopened when a write
    (here or by `fghash add`) switches it. The API is described in docs/serve.md and at
    /openapi.json; the web page is at /. SIGTERM or SIGINT stop accepting connections,
    finish the requests in flight and exit 0.
    """
    try:
        import uvicorn

        from fghash.serve.app import create_app
    except ImportError as e:
        raise FghashError(
            f"fghash serve needs FastAPI and uvicorn ({e.name} is missing): "
            "pip install 'fghash[serve]'."
        ) from None
    from fghash.serve.registry import Registry
    from fghash.serve.service import Settings
    from fghash.serve.writes import read_token

    if names and len(names) != len(bundles):
        raise FghashError(f"give one --name per bundle ({len(bundles)}), or none.")
    if allow_writes != (token_file is not None):
        raise FghashError("--allow-writes and --token-file go together.")
    token = read_token(token_file) if token_file is not None else None
    if threads is not None:  # FAISS's now; torch's when an image request first imports it
        os.environ["OMP_NUM_THREADS"] = str(threads)
        import faiss

        faiss.omp_set_num_threads(threads)
    reg = Registry()
    for i, path in enumerate(bundles):
        reg.add(names[i] if names else Path(path).resolve().name, path, device)
    app = create_app(
        reg,
        Settings(
            device=device,
            data_root=data_root,
            token=token,
            max_queries=max_queries,
            max_upload_mb=max_upload_mb,
        ),
    )
    sock = _bind(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    click.echo(f"fghash serve: http://{shown}:{bound_port}/ (Ctrl-C or SIGTERM to stop)")
    for name, served in reg.bundles.items():
        v = served.current()
        click.echo(
            f"  {name}: {served.folder} ({v.ntotal} items, {v.bits} bits, {v.meta['kind']}, "
            f"engine {v.engine}, generation {v.generation})"
        )
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    # uvicorn re-raises the signal that stopped it once it has finished the requests in
    # flight; with these handlers that re-raise is a no-op and the command exits 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    server.run(sockets=[sock])
    click.echo("fghash serve: stopped.", err=True)


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (0: a free port), or one sentence."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise FghashError(f"--host {host}: {e.strerror}.") from None
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise FghashError(f"cannot listen on {host}:{port}: {e.strerror}.") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock
