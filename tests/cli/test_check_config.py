"""`promptctl check` takes promptctl.yaml from the base commit: a pull request cannot
choose where CI's requests, API keys and results go."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import helpers
from tests.checkrepo import Repo, prompt_text, reply
from tests.fakeserver import FakeOpenAI

SECRET = "sk-ci-secret-do-not-leak"


@pytest.fixture
def other_server() -> Iterator[FakeOpenAI]:
    """A second server: where a hostile change would like requests to go."""
    with FakeOpenAI() as server:
        server.responder = reply
        yield server


def _config(url: str, key_env: str, price: float = 0.15) -> str:
    return (f"endpoints:\n  corp:\n    base_url: {url}\n    api_key_env: {key_env}\n"
            f"pricing:\n  corp/gpt-4o-mini: {{input: {price}, output: 0.6}}\n")


@pytest.fixture
def corp_repo(repo: Repo, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> Repo:
    """The base commit defines endpoint `corp` (the fake server, key $CORP_KEY) and the
    prompt uses it; the CI job also holds a secret the base config never names."""
    monkeypatch.setenv("CORP_KEY", "sk-corp-key")
    monkeypatch.setenv("CI_SECRET", SECRET)
    helpers.git(repo.root, "checkout", "-q", "main")
    repo.write("promptctl.yaml", _config(fake_openai.base_url, "CORP_KEY"))
    repo.write("prompts/score.yaml", prompt_text().replace("model: gpt-4o-mini",
                                                           "model: corp/gpt-4o-mini"))
    repo.commit("corp endpoint")
    helpers.git(repo.root, "checkout", "-q", "feature")
    helpers.git(repo.root, "merge", "-q", "--ff-only", "main")
    return repo


def _leaked(server: FakeOpenAI) -> list[str]:
    return [r.headers.get("authorization", "") for r in server.requests]


def test_changed_endpoint_is_reported_and_not_used(
        corp_repo: Repo, fake_openai: FakeOpenAI, other_server: FakeOpenAI) -> None:
    corp_repo.write("promptctl.yaml", _config(other_server.base_url, "CI_SECRET", price=99))
    corp_repo.write("prompts/score.yaml", prompt_text(description="Reworded.").replace(
        "model: gpt-4o-mini", "model: corp/gpt-4o-mini"))
    corp_repo.commit("move the endpoint")
    result = helpers.invoke("check", "--json")
    document = json.loads(result.stdout)
    assert other_server.count == 0, _leaked(other_server)
    assert fake_openai.chat_requests
    assert {r.headers.get("authorization") for r in fake_openai.chat_requests} == \
        {"Bearer sk-corp-key"}
    config = document["config"]
    assert config["source"] == "base" and config["path"] == "promptctl.yaml"
    assert config["changes"] == ["changes endpoint 'corp' (api_key_env, base_url)",
                                 "changes the price of 'corp/gpt-4o-mini'"]
    assert document["exit_code"] == 0

    shown = helpers.invoke("check")
    assert "changes endpoint 'corp' (api_key_env, base_url)" in shown.stdout
    assert "--trust-pr-config" in shown.stdout


def test_trust_pr_config_uses_the_change(
        corp_repo: Repo, fake_openai: FakeOpenAI, other_server: FakeOpenAI) -> None:
    corp_repo.write("promptctl.yaml", _config(other_server.base_url, "CI_SECRET"))
    corp_repo.write("prompts/score.yaml", prompt_text(description="Reworded.").replace(
        "model: gpt-4o-mini", "model: corp/gpt-4o-mini"))
    corp_repo.commit("move the endpoint")
    document = json.loads(helpers.invoke("check", "--json", "--trust-pr-config").stdout)
    assert document["config"]["source"] == "work tree"
    assert other_server.chat_requests
    assert {r.headers.get("authorization") for r in other_server.chat_requests} == \
        {f"Bearer {SECRET}"}


def test_endpoint_only_the_change_defines_is_refused(
        corp_repo: Repo, fake_openai: FakeOpenAI, other_server: FakeOpenAI) -> None:
    corp_repo.write("promptctl.yaml", _config(fake_openai.base_url, "CORP_KEY")
                    .replace("endpoints:\n", f"endpoints:\n  evil:\n    base_url: "
                             f"{other_server.base_url}\n    api_key_env: CI_SECRET\n"))
    corp_repo.write("prompts/score.yaml", prompt_text().replace("model: gpt-4o-mini",
                                                                "model: evil/gpt-4o-mini"))
    corp_repo.commit("a new endpoint")
    document = json.loads(helpers.invoke("check", "--json", code=2).stdout)
    [entry] = document["prompts"]
    assert "endpoint 'evil'" in entry["error"]["message"]
    assert "defined only by this change's promptctl.yaml" in entry["error"]["message"]
    assert other_server.count == 0
    assert document["config"]["changes"] == ["adds endpoint 'evil'"]


def test_scorer_on_a_new_endpoint_is_refused(
        corp_repo: Repo, fake_openai: FakeOpenAI, other_server: FakeOpenAI) -> None:
    """The secret could leave through a scorer's model as well as the prompt's."""
    corp_repo.write("promptctl.yaml", _config(fake_openai.base_url, "CORP_KEY").replace(
        "pricing:\n", f"  evil:\n    base_url: {other_server.base_url}\n"
        "    api_key_env: CI_SECRET\npricing:\n"))
    corp_repo.write("prompts/score.yaml", prompt_text().replace(
        "model: gpt-4o-mini", "model: corp/gpt-4o-mini").replace(
        "metrics: [exact_match, format_validity]",
        "metrics:\n  - exact_match\n  - format_validity\n"
        "  - {name: close, similarity: {model: evil/text-embedding-3-small}}"))
    corp_repo.commit("a scorer on a new endpoint")
    document = json.loads(helpers.invoke("check", "--json", code=2).stdout)
    assert "endpoint 'evil'" in document["prompts"][0]["error"]["message"]
    assert other_server.count == 0


def test_no_config_on_base_means_defaults(repo: Repo, other_server: FakeOpenAI,
                                          fake_openai: FakeOpenAI,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI_SECRET", SECRET)
    repo.write("promptctl.yaml", "endpoints:\n  evil:\n    base_url: "
               f"{other_server.base_url}\n    api_key_env: CI_SECRET\n"
               "store: sqlite:////tmp/elsewhere.db\nconcurrency: 3\n")
    repo.write("prompts/score.yaml", prompt_text(description="Reworded."))
    repo.commit("config arrives")
    document = json.loads(helpers.invoke("check", "--json").stdout)
    assert document["config"]["changes"] == ["adds endpoint 'evil'", "changes store",
                                             "changes concurrency"]
    assert other_server.count == 0 and fake_openai.chat_requests


def test_broken_base_config_names_the_commit(repo: Repo) -> None:
    helpers.git(repo.root, "checkout", "-q", "main")
    repo.write("promptctl.yaml", "endpoints: [1, 2]\n")
    base = repo.commit("broken config")
    helpers.git(repo.root, "checkout", "-q", "feature")
    helpers.git(repo.root, "merge", "-q", "main")
    repo.write("promptctl.yaml", "concurrency: 2\n")
    repo.commit("fix it here")
    err = helpers.invoke("check", code=2).stderr
    assert f"promptctl.yaml at {base[:12]}:1" in err
    assert "the base commit's promptctl.yaml cannot be used" in err
    assert "--trust-pr-config" in err
    helpers.invoke("check", "--trust-pr-config")


def test_operator_config_outside_the_repository_is_used(
        repo: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outside = tmp_path / "ci-config.yaml"
    outside.write_text("concurrency: 2\n", encoding="utf-8")
    monkeypatch.setenv("PROMPTCTL_CONFIG", str(outside))
    repo.write("prompts/score.yaml", prompt_text(description="Reworded."))
    repo.commit("reword")
    document = json.loads(helpers.invoke("check", "--json").stdout)
    assert document["config"] == {"source": "operator", "path": str(outside.resolve()),
                                  "changes": []}
