"""The pytest plugin: a `sandbox` fixture, and failure reports that show the sandboxes.

Registered through the `pytest11` entry point under this module's own name,
so `-p pyinit.pytest_plugin` (or `pytest_plugins = ["pyinit.pytest_plugin"]`)
where pyinit is not installed loads it once, and `-p no:pyinit.pytest_plugin`
turns it off. Inert for tests that do not use it: this module imports only
pytest, and pyinit.sandbox is imported when a test first asks for `sandbox`.
"""

from __future__ import annotations

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

    def start(argv: Any, **options: Any) -> Sandbox:
        box = Sandbox(argv, **options)
        boxes.append(box)
        return box.start()

    yield start
    errors = []
    for box in boxes:
        try:
            box.close()
        except Exception as failure:  # close the others anyway
            errors.append(failure)
    if errors:
        raise errors[0]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: "pytest.CallInfo[None]") -> Generator[None, Any, None]:
    outcome = yield
    boxes = item.stash.get(_SANDBOXES, None)
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
