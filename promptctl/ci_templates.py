"""The GitHub Actions workflow that `promptctl init --github` writes."""

from __future__ import annotations

from pathlib import Path

from promptctl import RELEASED, __version__, index_install_command
from promptctl.config import CONFIG_FILE
from promptctl.errors import InputError, PromptctlError
from promptctl.project import EVALSETS_DIR, PROMPTS_DIR, TARGET_DIRS, target_files
from promptctl.target import inputs_of, load_target, rel_in

WORKFLOW_PATH = Path(".github") / "workflows" / "promptctl.yml"

# Values from the event reach the shell through env:, never pasted into the
# script, so a branch name cannot inject commands.
WORKFLOW_TEMPLATE = """\
# promptctl: evaluate every prompt a pull request changes and gate it on the
# thresholds in its prompt file. Needs the repository secret OPENAI_API_KEY
# (or the keys your promptctl.yaml endpoints name, passed the same way).
name: promptctl

on:
  pull_request:
    # Every file a prompt's or pipeline's result depends on (its file, eval set, a
    # pipeline's prompts, judge prompts, scorers) and promptctl.yaml, as the project
    # had them when this was written: a folder of inputs added later goes here too.
    paths:
PATHS

permissions:
  contents: read
  pull-requests: write    # to post the report as a comment

concurrency:
  group: promptctl-${{ github.event.pull_request.number }}
  cancel-in-progress: true

jobs:
  check:
    runs-on: ubuntu-latest
    timeout-minutes: 30
    steps:
      - uses: actions/checkout@v4
        with:
          fetch-depth: 0    # the base commit must be in the clone

      - uses: actions/setup-python@v5
        with:
          python-version: "3.12"

INSTALL_STEP
      # A shared PostgreSQL store instead of this cache (README, "Stores"): every
      # job reads and writes the same runs and completions, so a pull request
      # finds the baselines that the main branch's runs stored (evaluate the
      # prompts on pushes to main) instead of evaluating them again. Install
      # promptctl with its postgres extra, delete the two cache steps, and give
      # the `promptctl check` step, from repository secrets, the URL without a
      # password and the password on its own (libpq reads PGPASSWORD):
      #   PROMPTCTL_STORE: ${{ secrets.PROMPTCTL_STORE }}  # postgresql://ci@db.example.com:5432/promptctl
      #   PGPASSWORD: ${{ secrets.PGPASSWORD }}
      # The store holds earlier runs (baselines) and every completion, so a
      # re-run of an unchanged prompt sends nothing.
      - name: Restore the results store
        uses: actions/cache/restore@v4
        with:
          path: .promptctl
          key: promptctl-store-${{ github.run_id }}-${{ github.run_attempt }}
          restore-keys: promptctl-store-

      # Exit 1: a gate failed. Exit 3: the provider failed (no verdict). Exit 2: bad input.
      - name: promptctl check
        env:
          OPENAI_API_KEY: ${{ secrets.OPENAI_API_KEY }}
          BASE_REF: ${{ github.base_ref }}
        run: >-
          promptctl check --base "origin/$BASE_REF"
          --markdown promptctl-report.md --junit promptctl-junit.xml
          --html promptctl-report.html

      - name: Save the results store
        if: always()
        uses: actions/cache/save@v4
        with:
          path: .promptctl
          key: promptctl-store-${{ github.run_id }}-${{ github.run_attempt }}

      # The HTML report (every row, charts) is under the run's artifacts.
      - name: Upload the HTML report
        if: always()
        uses: actions/upload-artifact@v4
        with:
          name: promptctl-report
          path: promptctl-report.html
          if-no-files-found: ignore

      - name: Comment on the pull request
        if: always() && hashFiles('promptctl-report.md') != ''
        continue-on-error: true    # pull requests from forks get a read-only token
        env:
          GH_TOKEN: ${{ github.token }}
          PR: ${{ github.event.pull_request.number }}
        run: gh pr comment "$PR" --edit-last --create-if-none --body-file promptctl-report.md
"""

INSTALL_STEP = """\
      - name: Install promptctl
        # promptctl-eval is promptctl's name on the package index (`promptctl` there is
        # another project); pinned to the version that wrote this workflow.
        run: INDEX_INSTALL
"""

# Before its first release promptctl cannot be installed from the index, and the workflow runs
# in the user's repository, where no checkout of promptctl is at hand: the step names what to
# write and stops with a message saying so, rather than run a pip command that fails obscurely.
UNRELEASED_INSTALL_STEP = """\
      - name: Install promptctl
        # Set this step's command before the workflow's first run: promptctl VERSION, which
        # wrote this workflow, is not on the package index yet, so install it from the git
        # repository you have it from, pinned to a tag or commit, with its report extra:
        #   run: pip install 'promptctl-eval[report] @ git+https://github.com/OWNER/REPO@COMMIT'
        # Once VERSION is released (promptctl-eval is promptctl's name on the package index;
        # `promptctl` there is another project):
        #   run: INDEX_INSTALL
        run: echo "::error::set the promptctl install command in the step Install promptctl" && exit 1
"""


def workflow_paths(directory: Path | None = None) -> list[str]:
    """The pull-request paths that trigger the check: the project's folders of targets and
    eval sets, promptctl.yaml, this workflow, and the folder of every input of every prompt
    and pipeline in `directory` (`target.inputs_of`, the list `check` itself goes by). A
    target that does not load adds its own folder only: `check` reports it."""
    paths = {f"{d}/**" for d in (*TARGET_DIRS, EVALSETS_DIR)}
    paths |= {CONFIG_FILE, WORKFLOW_PATH.as_posix()}
    if directory is not None:
        root = directory.resolve()
        for path in target_files(root):
            try:
                target = load_target(path, root)
            except PromptctlError:
                continue
            files = [f for f, _ in inputs_of(target)]
            if target.evalset is not None:
                files.append(target.evalset)
            for f in files:
                try:
                    rel = rel_in(f, root)
                except InputError:
                    continue
                top = rel.split("/", 1)
                paths.add(f"{top[0]}/**" if len(top) == 2 else rel)
    globs = sorted(p for p in paths if p.endswith("/**"))
    return globs + sorted(p for p in paths if not p.endswith("/**"))


def workflow(released: bool | None = None, directory: Path | None = None) -> str:
    """The workflow's text: it installs this version from the package index once released
    (RELEASED unless `released` says otherwise), and runs when a pull request touches an
    input of the project in `directory` (see `workflow_paths`)."""
    step = INSTALL_STEP if (RELEASED if released is None else released) else UNRELEASED_INSTALL_STEP
    step = step.replace("INDEX_INSTALL", index_install_command("report"))
    paths = "\n".join(f'      - "{p}"' for p in workflow_paths(directory))
    return WORKFLOW_TEMPLATE.replace("INSTALL_STEP", step.replace("VERSION", __version__)) \
        .replace("PATHS\n", paths + "\n")


WORKFLOW = workflow()


def is_project(directory: Path) -> bool:
    """A promptctl project is already there (a config file or a prompts/ folder)."""
    return (directory / CONFIG_FILE).exists() or (directory / PROMPTS_DIR).is_dir()


def check_workflow_free(directory: Path) -> Path:
    """Where the workflow goes; an error if a file is already there."""
    target = directory / WORKFLOW_PATH
    if target.exists():
        raise InputError("already exists: init does not overwrite files", file=target,
                         fix="delete or rename it, then run init --github again")
    return target


def write_workflow(directory: Path) -> Path:
    """Write .github/workflows/promptctl.yml under `directory`."""
    target = check_workflow_free(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(workflow(directory=directory), encoding="utf-8")
    return target
