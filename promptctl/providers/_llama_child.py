"""Child process that hosts llama.cpp's HTTP server (through xllamacpp) for one model.

Run as::

    python -m promptctl.providers._llama_child --model PATH --port PORT --ctx N [--threads N]

It serves the OpenAI-compatible API on 127.0.0.1:PORT and blocks until it is killed.
It lives in its own process because llama.cpp may end the whole process on some
startup failures (a port already taken, for one), and because a native server
thread must never share promptctl's process and its Ctrl-C handling.

It dies with its parent: on Linux through ``prctl(PR_SET_PDEATHSIG, SIGTERM)``,
and everywhere through a watchdog thread that polls ``os.getppid()``.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import errno
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from promptctl import install_command

# Exit status when the port could not be bound, so the parent retries with another port.
EXIT_PORT_IN_USE = 98  # EADDRINUSE on Linux
EXIT_STARTUP_FAILED = 1
EXIT_PARENT_GONE = 0
# Printed once the server has bound its port and loaded the model; LlamaServer waits for it.
READY_MARKER = "promptctl: serving "

_PR_SET_PDEATHSIG = 1
_WATCHDOG_INTERVAL = 0.5


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m promptctl.providers._llama_child",
        description="Serve one GGUF model with llama.cpp on 127.0.0.1 until killed.",
    )
    parser.add_argument("--model", required=True, help="path of the GGUF file")
    parser.add_argument("--port", required=True, type=int, help="TCP port on 127.0.0.1")
    parser.add_argument("--ctx", type=int, default=4096, help="context size in tokens")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: auto)")
    parser.add_argument(
        "--parallel", type=int, default=1, help="concurrent request slots (default: 1)"
    )
    parser.add_argument(
        "--cache-prompt",
        action="store_true",
        help="reuse the KV cache of a previous request's common prefix (faster, but greedy "
        "answers can then depend on which request came before)",
    )
    parser.add_argument(
        "--embeddings",
        action="store_true",
        help="serve POST /v1/embeddings too, mean-pooled over the tokens (chat still works)",
    )
    parser.add_argument(
        "--alias",
        default=None,
        help="model name the server reports (default: the file name without .gguf)",
    )
    parser.add_argument(
        "--parent-pid",
        type=int,
        default=None,
        help="pid of the process that owns this server (default: the parent at startup)",
    )
    parser.add_argument(
        "--no-pdeathsig",
        action="store_true",
        help="rely on the watchdog only (PR_SET_PDEATHSIG fires when the *thread* that "
        "started us ends, which is wrong when we were started from a short-lived thread)",
    )
    return parser.parse_args(argv)


def _set_pdeathsig() -> bool:
    """Ask Linux to send us SIGTERM when our parent dies; False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return int(libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _start_watchdog(parent_pid: int) -> None:
    """Exit as soon as we are re-parented, i.e. the process that started us is gone."""

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(EXIT_PARENT_GONE)
            time.sleep(_WATCHDOG_INTERVAL)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            return exc.errno != errno.EADDRINUSE
    return True


def _default_alias(model: str) -> str:
    # Without an alias llama.cpp reports the full path as the model name, which differs
    # between machines and would make identical runs look like different models.
    name = os.path.basename(model)
    return name[: -len(".gguf")] if name.lower().endswith(".gguf") else name


def server_params(args: argparse.Namespace, xllamacpp: Any) -> Any:
    """llama.cpp's server parameters (an ``xllamacpp.CommonParams``) for parsed `args`."""
    params = xllamacpp.CommonParams()
    params.model.path = args.model
    params.hostnames = ["127.0.0.1"]
    params.port = args.port
    params.reuse_port = False  # two servers must never share a port
    params.model_alias = {args.alias or _default_alias(args.model)}
    params.n_ctx = args.ctx
    params.n_parallel = args.parallel
    params.cache_prompt = args.cache_prompt
    if not args.cache_prompt:
        # The host-memory prompt cache restores earlier prompts' KV state into a slot, which
        # is prompt caching by another road: off with it.
        params.cache_ram_mib = 0
    params.offline = True  # never reach for the network
    params.ui = False
    if args.embeddings:
        params.embedding = True
        # A chat model has no pooling of its own, and llama.cpp's OpenAI route refuses
        # unpooled vectors: the mean over tokens works for any model.
        params.pooling_type = xllamacpp.llama_pooling_type.LLAMA_POOLING_TYPE_MEAN
    if args.threads is not None:
        params.cpuparams.n_threads = args.threads
        params.cpuparams_batch.n_threads = args.threads
    return params


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)

    # Die at once on SIGTERM (from LlamaServer.stop or PDEATHSIG) and on Ctrl-C, without
    # running Python finalizers while native server threads are still busy.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)

    parent_pid = args.parent_pid if args.parent_pid is not None else os.getppid()
    if not args.no_pdeathsig:
        _set_pdeathsig()
    # Checked after prctl: a parent that died before it took effect is caught here.
    if os.getppid() != parent_pid:
        return EXIT_PARENT_GONE
    _start_watchdog(parent_pid)

    try:
        import xllamacpp
    except ImportError:
        print(
            "promptctl: xllamacpp is not installed; run: " + install_command("local"),
            file=sys.stderr,
            flush=True,
        )
        return EXIT_STARTUP_FAILED

    params = server_params(args, xllamacpp)

    try:
        server = xllamacpp.Server(params)
    except RuntimeError as exc:
        print(f"promptctl: llama.cpp server failed to start: {exc}", file=sys.stderr, flush=True)
        if args.port and not _port_is_free(args.port):
            return EXIT_PORT_IN_USE
        return EXIT_STARTUP_FAILED

    print(f"{READY_MARKER}{args.model} at {server.listening_address}", flush=True)
    while True:  # the server runs on its own threads; we only wait for a signal
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main())
