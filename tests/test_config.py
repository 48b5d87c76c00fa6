"""Project configuration: promptctl.yaml, environment precedence, pricing."""

from __future__ import annotations

from pathlib import Path

import pytest

from promptctl.config import (
    DEFAULT_STORE,
    Config,
    Endpoint,
    Price,
    load_config,
)
from promptctl.errors import InputError
from promptctl.providers.openai import BUILTIN_PRICES


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project directory with no store or config override from the environment."""
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.delenv("PROMPTCTL_STORE", raising=False)
    monkeypatch.delenv("PROMPTCTL_CONFIG", raising=False)
    monkeypatch.chdir(project)
    return project


def write_config(root: Path, text: str) -> Path:
    path = root / "promptctl.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def config_error(root: Path, text: str) -> InputError:
    path = write_config(root, text)
    with pytest.raises(InputError) as info:
        load_config(root)
    assert info.value.file == str(path)
    assert info.value.fix
    return info.value


def test_no_config_file_gives_defaults(root: Path) -> None:
    config = load_config(root)
    assert config.root == root.resolve()
    assert config.path is None
    assert config.endpoints == {}
    assert config.pricing == {}
    assert config.store is None
    assert config.store_url() == f"sqlite:///{root.resolve() / '.promptctl' / 'results.db'}"
    assert DEFAULT_STORE.startswith("sqlite:///")


def test_empty_config_file(root: Path) -> None:
    write_config(root, "# everything commented out\n")
    config = load_config(root)
    assert config.path == root.resolve() / "promptctl.yaml"
    assert config.endpoints == {}


def test_full_config(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(root / "home"))
    write_config(root, """\
endpoints:
  ollama: {base_url: "http://127.0.0.1:11434/v1", api_key_env: OLLAMA_API_KEY}
  qwen: {gguf: "~/models/qwen.gguf", ctx: 2048, threads: 4, concurrency: 2}
  rel:
    gguf: models/small.gguf
pricing:
  ollama/llama3.2: {input: 0, output: 0}
  gpt-4o-mini: {input: 1, output: 2.5}
store: sqlite:///data/runs.db
concurrency: 4
""")
    config = load_config(root)
    ollama, qwen, rel = config.endpoints["ollama"], config.endpoints["qwen"], config.endpoints["rel"]
    assert ollama == Endpoint(name="ollama", settings={"base_url": "http://127.0.0.1:11434/v1",
                                                       "api_key_env": "OLLAMA_API_KEY"})
    assert ollama.type == "openai"
    assert qwen.type == "llamacpp"
    assert qwen.setting("gguf") == str(root / "home" / "models" / "qwen.gguf")
    assert (qwen.setting("ctx"), qwen.setting("threads"), qwen.concurrency) == (2048, 4, 2)
    assert rel.setting("gguf") == str(root.resolve() / "models" / "small.gguf")
    assert rel.setting("ctx") is None  # the backend's default applies
    assert config.pricing == {"ollama/llama3.2": Price(0.0, 0.0), "gpt-4o-mini": Price(1.0, 2.5)}
    assert config.concurrency == 4
    assert config.store == "sqlite:///data/runs.db"
    assert config.store_url() == f"sqlite:///{root.resolve() / 'data' / 'runs.db'}"


ERRORS = [
    # (id, yaml, line, substring of the message)
    ("unknown top-level key", "endpoint:\n  a: {base_url: x}\n", 1, "'endpoint'"),
    ("second unknown key", "store: x\nprices: {}\n", 2, "'prices'"),
    ("not a mapping", "- a\n- b\n", 1, "mapping"),
    ("endpoints not mapping", "endpoints: [a]\n", 1, "endpoints"),
    ("endpoint not mapping", "endpoints:\n  a: http://x\n", 2, "'a'"),
    ("endpoint empty", "endpoints:\n  a:\n", 2, "'a'"),
    ("both base_url and gguf", "endpoints:\n  a: {base_url: x, gguf: y}\n", 2, "exactly one"),
    ("neither base_url nor gguf", "endpoints:\n  a: {api_key_env: K}\n", 2, "exactly one"),
    ("unknown endpoint key", "endpoints:\n  a:\n    base_url: x\n    apikey: K\n", 4, "'apikey'"),
    ("slash in the name", "endpoints:\n  a/b: {base_url: x}\n", 2, "'/'"),
    ("base_url not text", "endpoints:\n  a:\n    base_url: 5\n", 3, "base_url"),
    ("gguf not text", "endpoints:\n  a:\n    gguf: [x]\n", 3, "gguf"),
    ("ctx zero", "endpoints:\n  a:\n    gguf: x\n    ctx: 0\n", 4, "ctx"),
    ("ctx text", "endpoints:\n  a:\n    gguf: x\n    ctx: big\n", 4, "ctx"),
    ("threads bool", "endpoints:\n  a:\n    gguf: x\n    threads: true\n", 4, "threads"),
    ("parallel a number", "endpoints:\n  a:\n    gguf: x\n    parallel: 4\n", 4, "true or false"),
    ("cache_prompt text", "endpoints:\n  a:\n    gguf: x\n    cache_prompt: yes please\n", 4,
     "cache_prompt"),
    ("parallel on a URL", "endpoints:\n  a:\n    base_url: x\n    parallel: true\n", 4, "'parallel'"),
    ("pricing not mapping", "pricing: [1]\n", 1, "pricing"),
    ("pricing missing output", "pricing:\n  m: {input: 1}\n", 2, "'m'"),
    ("pricing extra key", "pricing:\n  m: {input: 1, output: 2, cached: 0.5}\n", 2, "'m'"),
    ("pricing a number", "pricing:\n  m: 3\n", 2, "'m'"),
    ("pricing not a number", "pricing:\n  m: {input: 1, output: cheap}\n", 2, "output"),
    ("pricing negative", "pricing:\n  m: {input: -1, output: 1}\n", 2, "input"),
    ("pricing bool", "pricing:\n  m: {input: true, output: 1}\n", 2, "input"),
    ("store not text", "store: 5\n", 1, "store"),
    ("concurrency zero", "concurrency: 0\n", 1, "concurrency"),
    ("duplicate key", "store: a\nstore: b\n", 2, "duplicate"),
    ("malformed", "endpoints:\n  a: {base_url: x\n", 3, "YAML"),
]


@pytest.mark.parametrize(("text", "line", "needle"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_invalid_config(root: Path, text: str, line: int, needle: str) -> None:
    exc = config_error(root, text)
    assert exc.line == line, str(exc)
    assert needle in exc.message, str(exc)


TYPOS = [
    # (id, yaml, line, the key named, the key suggested)
    ("endpoint key, type unknown yet", "endpoints:\n  a:\n    baseurl: http://x/v1\n", 3,
     "'baseurl'", "did you mean 'base_url'?"),
    ("endpoint key of a known type", "endpoints:\n  a:\n    base_url: x\n    api_key_evn: K\n",
     4, "'api_key_evn'", "did you mean 'api_key_env'?"),
    ("endpoint type", "endpoints:\n  a:\n    type: opneai\n    base_url: x\n", 3, "'opneai'",
     "did you mean 'openai'?"),
    ("top-level key", "endpoint:\n  a: {base_url: x}\n", 1, "'endpoint'",
     "did you mean 'endpoints'?"),
]


@pytest.mark.parametrize(("text", "line", "named", "hint"), [t[1:] for t in TYPOS],
                         ids=[t[0] for t in TYPOS])
def test_a_misspelt_key_is_named_with_the_key_it_is_close_to(
        root: Path, text: str, line: int, named: str, hint: str) -> None:
    exc = config_error(root, text)
    assert (exc.line, named in exc.message) == (line, True), str(exc)
    assert exc.fix is not None and exc.fix.startswith(hint), str(exc)


def test_local_server_switches(root: Path) -> None:
    write_config(root, "endpoints:\n  a: {gguf: m.gguf, parallel: true, cache_prompt: false}\n")
    ep = load_config(root).endpoints["a"]
    assert ep.setting("parallel") is True
    assert ep.setting("cache_prompt") is False


def test_unknown_endpoint_key_lists_the_allowed_ones(root: Path) -> None:
    exc = config_error(root, "endpoints:\n  a: {base_url: x, apikey: K}\n")
    assert "api_key_env" in exc.fix


def test_config_env_names_another_file(root: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "elsewhere.yaml"
    other.write_text("store: sqlite:///other.db\n", encoding="utf-8")
    monkeypatch.setenv("PROMPTCTL_CONFIG", str(other))
    config = load_config(root)
    assert config.path == other
    assert config.store == "sqlite:///other.db"


def test_config_env_naming_a_missing_file(root: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPTCTL_CONFIG", str(tmp_path / "missing.yaml"))
    with pytest.raises(InputError) as info:
        load_config(root)
    assert info.value.file == str(tmp_path / "missing.yaml")
    assert info.value.fix and "PROMPTCTL_CONFIG" in info.value.fix


# --- store URL ------------------------------------------------------------------------

def test_store_from_file_is_relative_to_the_root(root: Path) -> None:
    write_config(root, "store: sqlite:///.cache/r.db\n")
    assert load_config(root).store_url() == f"sqlite:///{root.resolve() / '.cache' / 'r.db'}"


def test_store_relative_to_root_not_to_cwd(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(root, "store: sqlite:///r.db\n")
    sub = root / "prompts"
    sub.mkdir()
    monkeypatch.chdir(sub)
    assert load_config(root).store_url() == f"sqlite:///{root.resolve() / 'r.db'}"


def test_env_store_wins_over_the_file(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(root, "store: sqlite:///from-file.db\n")
    monkeypatch.setenv("PROMPTCTL_STORE", "sqlite:///from-env.db")
    config = load_config(root)
    assert config.store_url() == f"sqlite:///{root.resolve() / 'from-env.db'}"


def test_flag_wins_over_env(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPTCTL_STORE", "sqlite:///from-env.db")
    config = load_config(root)
    assert config.store_url("postgresql://u@h/db") == "postgresql://u@h/db"


@pytest.mark.parametrize(("url", "expected"), [
    ("sqlite:////abs/path/r.db", "sqlite:////abs/path/r.db"),
    ("sqlite:///:memory:", "sqlite:///:memory:"),
    ("postgresql://user@host/db", "postgresql://user@host/db"),
])
def test_store_urls_kept_as_they_are(root: Path, url: str, expected: str) -> None:
    write_config(root, f"store: '{url}'\n")
    assert load_config(root).store_url() == expected


def test_bare_store_path_is_a_sqlite_file_under_the_root(root: Path) -> None:
    write_config(root, "store: runs/results.db\n")
    assert load_config(root).store_url() == f"sqlite:///{root.resolve() / 'runs' / 'results.db'}"


def test_project_config_defaults_to_the_current_project(root: Path) -> None:
    from promptctl.project import project_config

    write_config(root, "concurrency: 3\n")
    assert project_config().concurrency == 3


# --- prices -----------------------------------------------------------------------------

def test_builtin_prices(root: Path) -> None:
    config = Config(root=root)
    assert config.price("gpt-4o-mini") == Price(0.15, 0.60)
    assert config.price("gpt-4o") == BUILTIN_PRICES["gpt-4o"]


@pytest.mark.parametrize(("model", "family"), [
    ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
    ("gpt-4o-2024-08-06", "gpt-4o"),
    ("gpt-4.1-nano-2025-04-14", "gpt-4.1-nano"),
    ("o3-mini-2025-01-31", "o3-mini"),
    ("gpt-4-0613", "gpt-4"),
])
def test_dated_snapshot_takes_its_family_price(root: Path, model: str, family: str) -> None:
    assert Config(root=root).price(model) == BUILTIN_PRICES[family]


@pytest.mark.parametrize("model", ["o1-pro", "gpt-5-pro", "o3-deep-research", "gpt-4o-minix",
                                   "my-finetune", "gpt-4-32k"])
def test_models_that_only_share_a_prefix_are_unknown(root: Path, model: str) -> None:
    # o1-pro costs ten times o1: a prefix match would understate the cost.
    assert Config(root=root).price(model) is None


def test_pricing_from_the_file_overrides_builtins(root: Path) -> None:
    write_config(root, "pricing:\n  gpt-4o-mini: {input: 1, output: 2}\n"
                       "  my-finetune: {input: 3, output: 4}\n")
    config = load_config(root)
    assert config.price("gpt-4o-mini") == Price(1.0, 2.0)
    assert config.price("gpt-4o-mini-2024-07-18") == Price(1.0, 2.0)
    assert config.price("my-finetune") == Price(3.0, 4.0)
    assert config.price("gpt-4o") == BUILTIN_PRICES["gpt-4o"]


def test_endpoint_prices(root: Path) -> None:
    write_config(root, "endpoints:\n  ollama: {base_url: 'http://x/v1'}\n  qwen: {gguf: q.gguf}\n"
                       "pricing:\n  ollama/llama3.2: {input: 0.5, output: 1}\n"
                       "  qwen/big: {input: 2, output: 2}\n")
    config = load_config(root)
    ollama, qwen = config.endpoints["ollama"], config.endpoints["qwen"]
    assert config.price("llama3.2", ollama) == Price(0.5, 1.0)
    assert config.price("mistral", ollama) is None
    # a server promptctl runs itself costs nothing, unless priced explicitly
    assert config.price("anything", qwen) == Price(0.0, 0.0)
    assert config.price("big", qwen) == Price(2.0, 2.0)
    # an endpoint's model is not an OpenAI model, even with an OpenAI name
    assert config.price("gpt-4o-mini", ollama) is None
