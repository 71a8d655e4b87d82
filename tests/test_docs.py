"""The documentation is checked, not hoped: every option documented, every link resolving, the
README short and its four examples running as written; and the house keeps its modules of one role."""

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from support import REPO, TIMEOUT, clean_env

README = REPO / "README.md"
DOCS = REPO / "docs"
PAGES = sorted(DOCS.glob("*.md"))
MARKDOWN = [README, *PAGES, *sorted((REPO / "examples").rglob("*.md"))]

FENCE = re.compile(r"^```.*?^```[ \t]*$", re.M | re.S)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
MAX_MODULE_LINES = 500
MAX_CLASS_LINES = 300


def prose(text: str) -> str:
    """The text without its fenced code blocks (a `#` in a shell comment is not a heading)."""
    return FENCE.sub("", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> "set[str]":
    """Every anchor GitHub gives the headings of a Markdown file (repeated slugs get -1, -2, ...)."""
    seen: "dict[str, int]" = {}
    result = set()
    for line in prose(path.read_text()).splitlines():
        match = re.match(r"#{1,6} (.*)", line)
        if match:
            base = slug(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            result.add(base if count == 0 else "%s-%d" % (base, count))
    return result


def long_options(module: str) -> "set[str]":
    done = subprocess.run([sys.executable, "-m", module, "--help"], env=clean_env(), cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    options = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", done.stdout))
    assert len(options) > 5, done.stdout
    return options


@pytest.mark.parametrize("module", ["pyinit", "pyinit.check"])
def test_every_long_option_is_documented(module):
    """Each long option `--help` prints appears in docs/, so a new option cannot ship undocumented."""
    text = "".join(page.read_text() for page in PAGES)
    missing = sorted(option for option in long_options(module)
                     if not re.search(r"(?<![\w-])%s(?![\w-])" % re.escape(option), text))
    assert missing == [], "python -m %s --help prints options that docs/ never names: %s" % (module, missing)


def test_every_relative_link_resolves():
    """Every relative link in README.md, docs/ and examples/ names a file that exists and, with
    #anchor, a heading of that file with that anchor."""
    broken = []
    for page in MARKDOWN:
        for target in LINK.findall(prose(page.read_text())):
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto:
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            where = "%s: %s" % (page.relative_to(REPO), target)
            if not resolved.exists():
                broken.append(where + " (no such file)")
            elif anchor and anchor not in anchors(resolved):
                broken.append(where + " (no such heading)")
    assert broken == []
    assert len(MARKDOWN) >= 8


def test_readme_is_a_front_door():
    """README.md stays short; every docs/ page says first whom it is for, and the README links to each."""
    lines = README.read_text().splitlines()
    assert len(lines) <= 300, "README.md has %d lines" % len(lines)
    for page in PAGES:
        body = [line for line in page.read_text().splitlines()[1:] if line.strip()]
        assert body[0].startswith("For "), "%s does not start by saying whom it is for" % page.name
        assert "](docs/%s" % page.name in README.read_text(), "README.md does not link to docs/%s" % page.name


def test_the_readme_test_command_is_what_ci_runs():
    """`.ci/run` runs exactly the README's test command."""
    command = "python3 -m pip install -q -e '.[test]' && python3 -m mypy && python3 -m pytest"
    assert command in README.read_text().splitlines()
    assert (REPO / ".ci" / "run").read_text().rstrip().splitlines()[-1] == command


def first_block(path: Path, heading: str, language: str = r"\w*") -> str:
    """The first fenced code block (in `language`, a regex) after the heading `heading` of a Markdown file."""
    text = path.read_text()
    start = text.index("\n%s\n" % heading)
    match = re.compile(r"^```%s\n(.*?)^```" % language, re.M | re.S).search(text, start)
    assert match, heading
    return match.group(1)


def example(heading: str) -> str:
    """The first fenced code block after the README's heading `heading`: one of its four examples."""
    return first_block(README, heading)


@pytest.fixture
def commands(tmp_path) -> "dict[str, str]":
    """An environment whose PATH has `pyinit` and `pyinit-check` running this tree on this interpreter."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, module in (("pyinit", "pyinit"), ("pyinit-check", "pyinit.check")):
        script = bin_dir / name
        script.write_text('#!/bin/sh\nexec %s -m %s "$@"\n' % (sys.executable, module))
        script.chmod(0o755)
    return clean_env(PATH="%s:%s" % (bin_dir, os.environ["PATH"]))


def test_the_dockerfile_example(commands):
    """Its ENTRYPOINT is pyinit's, and `pyinit -- CMD` serves and stops on SIGTERM as `docker stop` has it,
    here in a sandbox (namespaces and a network of its own, as a container has)."""
    import pyinit

    lines = example("### In a Dockerfile").splitlines()
    assert lines[0] == 'ENTRYPOINT ["pyinit", "--"]'
    assert lines[1].startswith("CMD ")
    argv = json.loads(lines[0].split(None, 1)[1]) + json.loads(lines[1].split(None, 1)[1])
    with pyinit.Sandbox(argv, env=commands, network="private") as box:
        box.wait_for_http(8080, "/", timeout=TIMEOUT)
        result = box.stop("TERM", timeout=TIMEOUT)
    assert result.exit_code == 128 + 15, result  # the server has no handler: pyinit passes its death on
    assert result.leftovers == [], result


def test_the_launcher_example(tmp_path, commands):
    """The terminal example, run by bash as written: the namespace listed by name, entered, ended."""
    script = example("### In a terminal: the launcher")
    done = subprocess.run(["bash", "--noprofile", "--norc", "-e", "-c", script + "wait $!\n"], cwd=tmp_path, env=commands,
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=TIMEOUT)
    assert done.returncode == 143, done  # `wait` for the launcher, which the `kill` ended
    lines = done.stdout.splitlines()
    assert re.match(r"NAME +PID +AGE +PROCS +COMMAND$", lines[0]), done.stdout
    assert re.match(r"demo +\d+ +[\d:]+ +2 +sleep 600$", lines[1]), done.stdout
    assert re.search(r"^ +2 sleep 600$", done.stdout, re.M), done.stdout
    assert "Traceback" not in done.stderr, done.stderr


def test_the_pytest_example(tmp_path, commands):
    """The pytest example, written to a file as it is, passes under the plugin."""
    (tmp_path / "test_example.py").write_text(example("### In a pytest test"))
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "pyinit.pytest_plugin", "-p", "no:cacheprovider",
                           "test_example.py"], cwd=tmp_path, env=commands, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=TIMEOUT * 2)
    assert done.returncode == 0, done.stdout
    assert "1 passed" in done.stdout, done.stdout


def test_the_testing_pages_pytest_example_runs_against_the_example_service(tmp_path, commands):
    """docs/testing.md's first pytest test, as written, from examples/testing/, where its "service.py" is."""
    (tmp_path / "test_from_the_docs.py").write_text(first_block(DOCS / "testing.md", "## A pytest test", "python"))
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "pyinit.pytest_plugin", "-p", "no:cacheprovider",
                           "--rootdir", str(tmp_path), str(tmp_path / "test_from_the_docs.py")],
                          cwd=REPO / "examples" / "testing", env=commands, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=TIMEOUT * 2)
    assert done.returncode == 0, done.stdout
    assert "1 passed" in done.stdout, done.stdout


def test_the_pyinit_check_example(tmp_path, commands):
    """The CI line, run by the shell as written: every check passes, and the JUnit file is there."""
    line = example("### In CI: `pyinit-check`")
    assert line.startswith("pyinit-check ")
    done = subprocess.run(["sh", "-c", line], cwd=tmp_path, env=commands, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=TIMEOUT * 2)
    assert done.returncode == 0, done
    assert [verdict.split()[0] for verdict in done.stdout.splitlines()[:3]] == ["PASS"] * 3, done.stdout
    assert "<testsuite" in (tmp_path / "pyinit-check.xml").read_text()


def test_modules_of_one_role():
    """No module of pyinit/ over 500 lines, no class over 300: split by responsibility before that."""
    too_big = []
    for path in sorted((REPO / "pyinit").rglob("*.py")):  # the sub-packages too
        source, name = path.read_text(), str(path.relative_to(REPO / "pyinit"))
        if len(source.splitlines()) > MAX_MODULE_LINES:
            too_big.append("%s: %d lines" % (name, len(source.splitlines())))
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES:
                too_big.append("%s: class %s, %d lines" % (name, node.name, node.end_lineno - node.lineno + 1))
    assert too_big == []
