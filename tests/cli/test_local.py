"""Local GGUF endpoints from the command line: what is refused before any server starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import copy_examples, run_cli, runs_json


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    copy_examples(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_parameter_llama_cpp_rejects_is_named_before_anything_starts(project: Path) -> None:
    path = project / "prompts" / "controversy.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("seed: 0", "seed: 0\n  n: 2"),
                    encoding="utf-8")
    result = run_cli("eval", str(path), "--model", "local/smollm2")
    assert result.exit_code == 2, result.output
    assert "n=2" in result.stderr and "'local'" in result.stderr
    assert "--repeat" in result.stderr  # the fix: how to get several answers per row
    assert "Traceback" not in result.output
    assert runs_json() == []


def test_a_gguf_endpoint_naming_a_file_that_is_not_gguf(project: Path) -> None:
    bogus = project / "model.gguf"
    bogus.write_text("version https://git-lfs.github.com/spec/v1\n", encoding="utf-8")
    (project / "promptctl.yaml").write_text(f"endpoints:\n  mine: {{gguf: {bogus}}}\n",
                                            encoding="utf-8")
    result = run_cli("eval", "prompts/controversy.yaml", "--model", "mine/x")
    assert result.exit_code == 2, result.output
    # Paths in messages are relative to the project root.
    assert "error: model.gguf: not a GGUF model file" in result.stderr
    assert runs_json() == []


def test_a_gguf_endpoint_naming_a_missing_file(project: Path) -> None:
    (project / "promptctl.yaml").write_text("endpoints:\n  mine: {gguf: nowhere/model.gguf}\n",
                                            encoding="utf-8")
    result = run_cli("eval", "prompts/controversy.yaml", "--model", "mine/x")
    assert result.exit_code == 2, result.output
    assert "model.gguf" in result.stderr
    assert runs_json() == []


def test_the_builtin_local_endpoint_serves_only_smollm2(project: Path) -> None:
    result = run_cli("eval", "prompts/controversy.yaml", "--model", "local/llama3")
    assert result.exit_code == 2, result.output
    assert "local/smollm2" in result.stderr
