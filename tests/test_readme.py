"""The README and the guides in docs/ stay true: every command they show passes its script only flags the script
accepts, the README stays short, every link leads to a file and a heading that exist, and no page cites an issue
number a reader cannot open. Each check is also run on a deliberately broken input, to show it would fail."""
from __future__ import annotations

import functools
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT

README = ROOT / "README.md"
README_LIMIT = 12 * 1024  # bytes: a newcomer reads the README in about five minutes
SCRIPTS = ("train.py", "predict.py", "figures.py", "export.py", "demo.py", "tune.py")
# Records of past runs: their commands ran with the code of their day, so their flags are not checked against today's.
RECORDS = ("model-selection.md", "benchmarks-history.md")
# tune.py and its page are being written together; until the script exists, its command and these links are skipped.
TUNE_FILES = {ROOT / "docs" / "tuning.md", ROOT / "docs" / "tune_history.png"}

FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```", re.M | re.S)
SHELL_LANGUAGES = {"bash", "sh", "shell"}
SEPARATORS = {"&&", "||", ";", "|", "&"}
ISSUE_REF = re.compile(r"(?<!&)#\d+")  # "#25"; an HTML entity such as "&#8212;" is not one
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def pages() -> list[Path]:
    return [README, ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").glob("*.md"))]


def guides() -> list[Path]:
    """The pages whose commands a user runs today: README and docs/ less its records."""
    return [README, *(p for p in sorted((ROOT / "docs").glob("*.md")) if p.name not in RECORDS)]


def shell_commands(text: str) -> list[str]:
    """Each simple command of the fenced shell blocks, with continuation lines joined and comments dropped."""
    found = []
    for language, body in FENCE.findall(text):
        if language not in SHELL_LANGUAGES:
            continue
        for line in body.replace("\\\n", " ").splitlines():
            lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            command: list[str] = []
            for token in [*lexer, ";"]:
                if token in SEPARATORS:
                    if command:
                        found.append(shlex.join(command))
                    command = []
                else:
                    command.append(token)
    return found


def script_flags(command: str) -> tuple[str, list[str]] | None:
    """The project script a command runs and the flags given to it (those after it: before it, accelerate's)."""
    tokens = shlex.split(command)
    for i, token in enumerate(tokens):
        if Path(token).name in SCRIPTS:
            return Path(token).name, [t.split("=", 1)[0] for t in tokens[i + 1:] if t.startswith("--")]
    return None


@functools.lru_cache(maxsize=None)
def help_flags(script: str) -> frozenset[str]:
    env = {**os.environ, "COLUMNS": "200"}  # argparse wraps help text as wide as the terminal says
    done = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, f"{script} --help failed:\n{done.stderr}"
    return frozenset(re.findall(r"(?<![\w-])--[A-Za-z][\w-]*", done.stdout))


def unknown_flags(command: str) -> list[str]:
    script, flags = script_flags(command)
    known = help_flags(script)
    return [flag for flag in flags if flag not in known]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """The anchors of a page's headings (not the '#' lines of its code blocks); a repeated heading gets -1, -2, ..."""
    seen: dict[str, int] = {}
    result = set()
    for line in FENCE.sub("", text).splitlines():
        match = re.match(r"#{1,6} (.*)", line)
        if match:
            base = slug(match.group(1))
            result.add(base if base not in seen else f"{base}-{seen[base]}")
            seen[base] = seen.get(base, 0) + 1
    return result


def broken_links(page: Path, text: str) -> list[str]:
    broken = []
    for target in LINK.findall(FENCE.sub("", text)):
        if re.match(r"[a-z]+:", target):  # http(s), mailto: not checked offline
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if file in TUNE_FILES and not (ROOT / "tune.py").exists():
            continue
        if not file.exists():
            broken.append(f"{target}: no file {file}")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file.read_text(encoding="utf-8")):
            broken.append(f"{target}: no heading with anchor #{anchor} in {file.name}")
    return broken


def guide_commands() -> list[tuple[str, str]]:
    return [(page.name, command) for page in guides() for command in shell_commands(page.read_text(encoding="utf-8"))
            if script_flags(command)]


COMMANDS = guide_commands()


def test_the_readme_shows_the_commands_it_promises():
    readme = [c for page, c in COMMANDS if page == "README.md"]
    # The two commands of the first screen, verbatim: CI (.ci/run) runs the second one as it stands.
    assert ("accelerate launch --config_file accelerate_configs/cpu.yaml train.py --preset fast" in
            shell_commands(README.read_text(encoding="utf-8")))
    assert "python -m pytest -q" in shell_commands(README.read_text(encoding="utf-8"))
    assert {script_flags(c)[0] for c in readme} >= {"train.py", "predict.py", "figures.py", "export.py", "demo.py"}


@pytest.mark.parametrize("page, command", COMMANDS, ids=[f"{p}: {c[:70]}" for p, c in COMMANDS])
def test_every_flag_of_a_shown_command_is_in_its_scripts_help(page, command):
    script, _ = script_flags(command)
    if not (ROOT / script).exists():
        pytest.skip(f"{script} does not exist yet (it is being written): its command waits for it")
    assert unknown_flags(command) == [], f"{page}: {command}"


def test_every_config_file_a_command_names_exists():
    for page in guides():
        for command in shell_commands(page.read_text(encoding="utf-8")):
            tokens = shlex.split(command)
            for flag, value in zip(tokens, tokens[1:]):
                if flag == "--config_file":
                    assert (ROOT / value).exists(), f"{page.name}: {command}"


def test_the_readme_is_at_most_12_kb():
    size = len(README.read_bytes())
    assert size <= README_LIMIT, f"README.md is {size} bytes; move depth to docs/"


def test_no_page_cites_an_issue_number():
    for page in pages():
        refs = ISSUE_REF.findall(page.read_text(encoding="utf-8"))
        assert refs == [], f"{page.relative_to(ROOT)} cites {refs}: name the round or the document instead"


def test_every_link_leads_to_a_file_and_heading_that_exist():
    broken = [f"{page.relative_to(ROOT)}: {link}" for page in pages()
              for link in broken_links(page, page.read_text(encoding="utf-8"))]
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_each_check_fails_on_a_broken_input():
    """The checks above, on inputs with one thing wrong each: a check that cannot fail proves nothing."""
    good = README.read_text(encoding="utf-8")
    fake = good.replace("train.py --preset fast", "train.py --preset fast --no-such-flag", 1)
    assert fake != good
    bad = [c for c in shell_commands(fake) if "--no-such-flag" in c]
    assert bad and unknown_flags(bad[0]) == ["--no-such-flag"]
    # A flag of another script, and one after `=`, are caught as well; accelerate's own flags are not train.py's.
    assert unknown_flags("python predict.py --run A --epochs 3 x.png") == ["--epochs"]
    assert unknown_flags("python figures.py --run=A --formats pdf") == ["--formats"]
    assert unknown_flags("accelerate launch --config_file c.yaml --dynamo_backend inductor train.py --epochs 1") == []
    assert ISSUE_REF.findall("as issue #28 quotes them") == ["#28"]
    assert ISSUE_REF.findall("[round 9](#round-9-a-screen) and &#8212;") == []
    assert len((good + "x" * README_LIMIT).encode()) > README_LIMIT
    assert broken_links(README, "[x](docs/no-such-page.md)") != []
    assert broken_links(README, "[x](BENCHMARKS.md#no-such-heading)") != []
    assert broken_links(README, "[x](BENCHMARKS.md#machines)") == []
