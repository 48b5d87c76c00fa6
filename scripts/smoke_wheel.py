"""Check built distributions the way a user meets them: the wheel installed alone.

    python scripts/smoke_wheel.py dist [--tag v0.2.0]

DIST holds one wheel and one sdist (`python -m build`). The script checks that the wheel holds
every file of the package that git tracks (templates, stylesheet and py.typed included),
installs it with the `report` extra into a fresh venv, runs `promptctl --help`, then evaluates
the controversy example against tests/fakeserver.py's FakeOpenAI on 127.0.0.1 and writes an
HTML report of the stored run. The commands run from a copy of the example outside this
checkout, so they can only import the installed wheel. With --tag (the release workflow) the
tag must name the version, and the version must be marked released.

Exit 0 when every check passed; otherwise the first failure is printed and the exit is 1.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import venv
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PROMPT = Path("prompts") / "controversy.yaml"
EVALSET = Path("evalsets") / "controversy.jsonl"


class SmokeFailure(Exception):
    """A check failed: the message says which and shows what was seen."""


def package_files() -> set[str]:
    """The files the wheel must hold: every file of the package that git tracks. Besides the
    modules, the templates and stylesheet of the HTML report and py.typed, so a data file that
    pyproject.toml's package-data does not name is caught, whatever its kind."""
    listed = subprocess.run(["git", "ls-files", "-z", "promptctl"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout
    return {name for name in listed.split("\0") if name}


def wheel_version(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as archive:
        [metadata] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        text = archive.read(metadata).decode("utf-8")
    match = re.search(r"^Version: (\S+)$", text, re.MULTILINE)
    if match is None:
        raise SmokeFailure(f"{wheel.name}: no Version in its METADATA")
    return match.group(1)


def check_wheel_contents(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    missing = sorted(package_files() - names)
    if missing:
        raise SmokeFailure(f"{wheel.name} lacks {len(missing)} file(s) of the package: {missing} "
                           "(package-data in pyproject.toml)")


def tag_problems(tag: str, version: str, installed: str, released: bool) -> list[str]:
    """Why `tag` must not be published: empty when it names a version that is ready."""
    problems = []
    if tag != f"v{version}":
        problems.append(f"the tag {tag} does not name the package's version {version} "
                        f"(pyproject.toml): tag v{version}, or bump the version")
    if installed != version:
        problems.append(f"promptctl.__version__ is {installed} but pyproject.toml says {version}: "
                        "set both")
    if not released:
        problems.append("promptctl.RELEASED is False: set it True in the release commit, or every "
                        "install hint of the published package names a checkout")
    return problems


def run(args: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 300) -> str:
    """Run a command; its stdout, or a failure showing its output."""
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise SmokeFailure(f"{' '.join(args)} exited {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done.stdout


def expected_answers() -> dict[str, Any]:
    """The eval set's expected score of each text, so the fake model can answer right."""
    answers = {}
    for line in (ROOT / EVALSET).read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            answers[row["input"]["text"]] = row["expected"]
    return answers


def smoke(dist: Path, tag: str | None) -> None:
    wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        raise SmokeFailure(f"{dist} must hold one wheel and one sdist: clear it, then python -m build")
    wheel, version = wheels[0], wheel_version(wheels[0])
    if sdists[0].name != f"promptctl_eval-{version}.tar.gz":
        raise SmokeFailure(f"the sdist {sdists[0].name} is not version {version} of promptctl_eval")
    check_wheel_contents(wheel)
    print(f"{wheel.name}: every package file is in it")

    # The fake server lives in the test suite; this process imports it, never promptctl.
    sys.path.insert(0, str(ROOT))
    from tests.fakeserver import FakeOpenAI

    with tempfile.TemporaryDirectory(prefix="promptctl-smoke-") as scratch:
        base = Path(scratch)
        started = time.monotonic()
        venv.create(base / "venv", with_pip=True)
        bin_dir = base / "venv" / ("Scripts" if os.name == "nt" else "bin")
        env = {k: v for k, v in os.environ.items()
               if k not in {"PYTHONPATH", "VIRTUAL_ENV", "PROMPTCTL_STORE", "PROMPTCTL_CONFIG"}}
        env.update(NO_COLOR="1", PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}")
        # --no-compile: byte-compiling every dependency costs more than the few modules run here.
        run([str(bin_dir / "python"), "-m", "pip", "install", "-q", "--no-compile",
             f"{wheel.resolve()}[report]"], cwd=base, env=env, timeout=900)
        print(f"installed {wheel.name}[report] in a fresh venv ({time.monotonic() - started:.0f} s)")

        project = base / "project"
        for rel in (PROMPT, EVALSET):
            (project / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ROOT / rel, project / rel)
        promptctl = str(bin_dir / "promptctl")
        where = run([str(bin_dir / "python"), "-c", "import promptctl, json; print(json.dumps("
                     "[promptctl.__file__, promptctl.__version__, promptctl.RELEASED]))"],
                    cwd=project, env=env)
        module, installed, released = json.loads(where)
        if not Path(module).resolve().is_relative_to((base / "venv").resolve()):
            raise SmokeFailure(f"promptctl was imported from {module}, not from the wheel's venv")
        if tag is not None:
            problems = tag_problems(tag, version, installed, released)
            if problems:
                raise SmokeFailure("not a release:\n  " + "\n  ".join(problems))
            print(f"{tag} names version {version}, marked released")

        if "Usage" not in run([promptctl, "--help"], cwd=project, env=env):
            raise SmokeFailure("promptctl --help printed no usage")

        answers = expected_answers()
        with FakeOpenAI() as server:
            def respond(body: dict[str, Any]) -> str:
                # The row's text is the end of the last message; the few-shot examples (not
                # rows) get any score in the asked format.
                text = str(body["messages"][-1]["content"])
                row = max((t for t in answers if text.endswith(t)), key=len, default=None)
                return f"Controversy score: {answers[row] if row is not None else 5}"

            server.responder = respond
            env.update(OPENAI_BASE_URL=server.base_url, OPENAI_API_KEY="smoke-test")
            result = json.loads(run([promptctl, "eval", PROMPT.as_posix(), "--json"],
                                    cwd=project, env=env))
            asked = len(server.chat_requests)
        [run_doc] = result["runs"]
        run_id = run_doc["id"]
        exact = run_doc["metrics"]["exact_match"]["value"]
        if asked < len(answers) or exact != 1.0:
            raise SmokeFailure(f"the eval sent {asked} requests for {len(answers)} rows and scored "
                               f"exact_match {exact}, not 1.0")
        stored = json.loads(run([promptctl, "runs", "--json"], cwd=project, env=env))
        if run_id not in [r["id"] for r in stored["runs"]]:
            raise SmokeFailure(f"promptctl runs does not list the run {run_id}")
        print(f"promptctl eval: run {run_id}, {asked} requests, exact_match 1.0, stored")

        report = project / "report.html"
        run([promptctl, "report", run_id, "-o", str(report)], cwd=project, env=env)
        html = report.read_text(encoding="utf-8")
        if run_id not in html or "<svg" not in html:
            raise SmokeFailure(f"{report.name} lacks the run id or its charts")
        print(f"promptctl report: {len(html):,} characters, with charts")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dist", type=Path, help="the folder python -m build wrote")
    parser.add_argument("--tag", help="the git tag being released (v1.2.3)")
    args = parser.parse_args(argv)
    try:
        smoke(args.dist, args.tag)
    except SmokeFailure as failure:
        print(f"smoke check failed: {failure}", file=sys.stderr)
        return 1
    print("smoke check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
