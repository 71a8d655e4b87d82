"""The pytest plugin: the `sandbox` and `sandbox_factory` fixtures, and failure reports that show the sandboxes.

Registered through the `pytest11` entry point under this module's own name,
so `-p pyinit.pytest_plugin` (or `pytest_plugins = ["pyinit.pytest_plugin"]`)
where pyinit is not installed loads it once, and `-p no:pyinit.pytest_plugin`
turns it off. Inert for tests that do not use it: this module imports only
pytest, and pyinit.sandbox is imported when a test first asks for `sandbox`.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Generator, Iterator, List

import pytest

if TYPE_CHECKING:
    from pyinit.sandbox import Sandbox

_SANDBOXES = pytest.StashKey[List["Sandbox"]]()


@pytest.fixture
def sandbox(request: pytest.FixtureRequest) -> Iterator[Any]:
    """sandbox(argv, **options) -> a started pyinit.Sandbox, torn down at the end of the test.

    The options are pyinit.Sandbox's. When the test fails, its report shows
    each sandbox's process tree at that moment, its output tail and exit report.
    """
    from pyinit.sandbox import Sandbox

    boxes: List[Sandbox] = []
    request.node.stash[_SANDBOXES] = boxes
    yield _starter(Sandbox, boxes)
    _close_all(boxes)


def _starter(sandbox: "type[Sandbox]", boxes: "List[Sandbox]") -> Any:
    """What a fixture gives: start(argv, **options) makes a Sandbox, keeps it in `boxes` to close, starts it."""
    def start(argv: Any, **options: Any) -> "Sandbox":
        box = sandbox(argv, **options)
        boxes.append(box)
        return box.start()

    return start


def _close_all(boxes: "List[Sandbox]") -> None:
    errors = []
    for box in boxes:
        try:
            box.close()
        except Exception as failure:  # close the others anyway
            errors.append(failure)
    if errors:
        raise errors[0]


def _shared_sandboxes(item: pytest.Item) -> "List[Sandbox]":
    """The sandboxes among the values of the fixtures the test used (a module fixture's, say), not its own."""
    module = sys.modules.get("pyinit.sandbox")
    if module is None:  # no sandbox was ever made: nothing to look for, nothing to import
        return []
    own = item.stash.get(_SANDBOXES, [])
    values = getattr(item, "funcargs", {}).values()
    return [value for value in values if isinstance(value, module.Sandbox) and value not in own]


@pytest.fixture(scope="session")
def sandbox_factory() -> Iterator[Any]:
    """sandbox_factory(argv, **options) -> a started pyinit.Sandbox that lives until the end of the session.

    For module- and session-scoped fixtures (pytest's tmp_path_factory
    convention): one service started once for many tests. Close it yourself
    to end it sooner. A failing test that uses a fixture holding such a
    sandbox gets its sections in the report, as with `sandbox`.
    """
    from pyinit.sandbox import Sandbox

    boxes: List[Sandbox] = []
    yield _starter(Sandbox, boxes)
    _close_all(boxes)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: "pytest.CallInfo[None]") -> Generator[None, Any, None]:
    outcome = yield
    boxes = [*item.stash.get(_SANDBOXES, []), *_shared_sandboxes(item)]
    if not boxes:
        return
    report = outcome.get_result()
    if report.failed and report.when in ("setup", "call"):  # a fixture's readiness wait fails in setup
        for number, box in enumerate(boxes, 1):
            for title, text in _sections(box):
                report.sections.append(("pyinit sandbox %d (%s): %s" % (number, box.label, title), text))


def _sections(box: "Sandbox") -> "list[tuple[str, str]]":
    """The process tree now, the output tail, and the exit report (once pyinit has written it)."""
    import json

    from pyinit.sandbox import TimeoutExpired

    try:
        result = box.wait(0)  # at once, if pyinit has ended already
    except TimeoutExpired:
        result = None
    tree = box.tree()
    if result is not None and result.leftovers:
        tree += "\nstill running after the command exited:\n" + "\n".join(str(p) for p in result.leftovers)
    sections = [("processes at the failure", tree), ("output", box.output_tail())]
    if result is not None and result.report is not None:
        sections.append(("exit report", json.dumps(result.report, indent=1, sort_keys=True)))
    else:
        sections.append(("exit report", "(none yet: pyinit was still running)"))
    return sections
