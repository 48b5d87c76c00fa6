"""The one rule for which stored run stands for a prompt version, and naming prompts."""

from __future__ import annotations

from pathlib import Path

import pytest

from promptctl.config import Config
from promptctl.errors import InputError
from promptctl.selection import best, find_prompt, standing_run, stands_for_version
from promptctl.store.sqlite import SQLiteStore
from tests.test_compare import ERR, answers_for, put_run


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    """Runs of prompt p at commits c1 and c2, of versions v1 and v2, with models m and big.

    At c1 (version v1, model m): a partial run (the newest), an errored run, a dirty run
    and two complete clean runs. Elsewhere: a v2 run at c2, a run of model big, a failed run.
    """
    s = SQLiteStore(tmp_path / "results.db")
    put_run(s, "01a", answers_for(4), commit="c1")                       # complete, clean
    put_run(s, "01b", answers_for(4), commit="c1")                       # complete, clean, newer
    put_run(s, "01c", answers_for(4), commit="c1", dirty=True)           # dirty
    put_run(s, "01d", {**answers_for(3), "r4": ERR}, commit="c1")        # one error row
    put_run(s, "01e", answers_for(2), commit="c1", coverage="partial")   # --limit 2
    put_run(s, "01f", answers_for(4), commit="c2", version="v2")
    put_run(s, "01g", answers_for(4), commit="c1", model="big")
    put_run(s, "01h", answers_for(4), commit="c1", status="interrupted", coverage="partial")
    return s


def chosen(found: object) -> str | None:
    return None if found is None else found.run["id"]  # type: ignore[attr-defined]


def test_only_complete_runs_of_the_whole_eval_set_stand_for_a_version(store: SQLiteStore) -> None:
    standing = [r["id"] for r in store.list_runs("p") if stands_for_version(r)]
    assert sorted(standing) == ["01a", "01b", "01c", "01d", "01f", "01g"]


def test_the_newest_clean_error_free_run_wins(store: SQLiteStore) -> None:
    assert chosen(standing_run(store, "p", commit="c1", model="m")) == "01b"
    assert chosen(standing_run(store, "p", version="v1", model="m")) == "01b"


def test_errors_rank_below_a_dirty_tree_and_a_dirty_tree_below_a_clean_one(
        store: SQLiteStore) -> None:
    runs = {r["id"]: r for r in store.list_runs("p")}
    assert best([runs["01c"], runs["01d"]])["id"] == "01c"  # type: ignore[index]
    assert best([runs["01a"], runs["01c"]])["id"] == "01a"  # type: ignore[index]
    assert best([runs["01d"]])["id"] == "01d"  # type: ignore[index]
    assert best([]) is None


def test_a_partial_run_never_stands_even_when_newest(store: SQLiteStore) -> None:
    put_run(store, "01z", answers_for(1), commit="c9", coverage="partial")
    assert standing_run(store, "p", commit="c9") is None


def test_errors_can_be_refused(store: SQLiteStore) -> None:
    put_run(store, "01x", {**answers_for(3), "r4": ERR}, commit="c7", version="v7")
    assert chosen(standing_run(store, "p", version="v7")) == "01x"
    assert standing_run(store, "p", version="v7", allow_errors=False) is None


def test_models_and_servers_are_kept_apart(store: SQLiteStore) -> None:
    assert chosen(standing_run(store, "p", commit="c1", model="big")) == "01g"
    assert standing_run(store, "p", commit="c1", model="m",
                        base_url="http://127.0.0.1:9/v1") is None


def test_at_a_commit_without_runs_the_same_versions_elsewhere_stand_with_a_note(
        store: SQLiteStore) -> None:
    found = standing_run(store, "p", commit="c5", version="v2", evalset_version="e1", model="m")
    assert found is not None and found.run["id"] == "01f"
    assert found.note is not None and "same prompt and eval set versions" in found.note
    assert standing_run(store, "p", commit="c5", version="v2", evalset_version="e9") is None
    assert standing_run(store, "p", commit="c5") is None  # version unknown: only runs at c5


def test_a_run_at_the_commit_of_another_version_does_not_stand_for_this_one(
        store: SQLiteStore) -> None:
    # A dirty run at c3 evaluated an edited text, not what c3 committed.
    put_run(store, "02a", answers_for(4), commit="c3", dirty=True, version="edited")
    assert chosen(standing_run(store, "p", commit="c3", version="v1", model="m")) == "01b"
    assert chosen(standing_run(store, "p", commit="c3")) == "02a"


def test_runs_stored_before_coverage_was_recorded(store: SQLiteStore) -> None:
    put_run(store, "03a", answers_for(4), commit="c8", coverage=None)
    store.update_run("03a", options={"limit": None})
    put_run(store, "03b", answers_for(2), commit="c8", coverage=None)
    store.update_run("03b", options={"limit": 2}, n_planned=2)
    assert [r["id"] for r in store.list_runs("p") if r["git_commit"] == "c8"
            and stands_for_version(r)] == ["03a"]


# --- naming prompts ---------------------------------------------------------------------------


def test_an_unknown_prompt_name_lists_the_names_that_exist(tmp_path: Path,
                                                          store: SQLiteStore) -> None:
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "greet.yaml").write_text("name: hello\nmessages: []\n", encoding="utf-8")
    config = Config(root=tmp_path)
    with pytest.raises(InputError) as err:
        find_prompt(store, config, "nope")
    assert err.value.message == "no prompt named 'nope'"
    assert err.value.fix is not None and "greet" in err.value.fix and "p" in err.value.fix
    assert find_prompt(store, config, "p").path is None  # known from stored runs only
    found = find_prompt(store, config, "greet")
    assert found.path == tmp_path / "prompts" / "greet.yaml"
