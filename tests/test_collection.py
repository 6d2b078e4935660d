# -*- test-case-name: tests.test_collection -*-
"""
The README's test command runs the suite once, with pytest; every test is
still a trial TestCase, so C{python -m twisted.trial tests} runs the same
tests.  This checks that the two runners find exactly the same test ids,
so a plain pytest function (which trial would skip) or a TestCase pytest
does not collect cannot slip in.

Both collections run in this process: the test modules are already
imported, so this takes about a second, not the minutes of a second run.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from twisted.trial import runner
from twisted.trial.unittest import SkipTest, SynchronousTestCase

ROOT = Path(__file__).resolve().parent.parent


def trialIDs() -> set[str]:
    """
    The ids of the tests C{trial tests} runs, as C{tests.test_x.Class.test_y}.
    """
    from twisted.trial._asyncrunner import _iterateTests

    suite = runner.TestLoader().loadByName("tests", recurse=True)
    return {test.id() for test in _iterateTests(suite)}


class _Recorder:
    """
    A pytest plugin that keeps the ids of every collected item, before any
    deselection.
    """

    def __init__(self) -> None:
        self.ids: set[str] = set()

    def pytest_collection_modifyitems(self, items: list[Any]) -> None:
        for item in items:
            path, *names = item.nodeid.split("::")
            module = path.removesuffix(".py").replace("/", ".")
            self.ids.add(".".join([module, *names]))


def pytestIDs() -> set[str]:
    """
    The ids of the tests C{pytest tests} runs, in trial's dotted form.
    """
    import pytest

    recorder = _Recorder()
    code = pytest.main(
        ["--collect-only", "-qq", "-p", "no:cacheprovider", "--rootdir", str(ROOT), str(ROOT / "tests")],
        plugins=[recorder],
    )
    if code != 0:
        raise AssertionError(f"pytest --collect-only exited {code}")
    return recorder.ids


class SameTestsTests(SynchronousTestCase):
    """
    trial and pytest collect the same tests.
    """

    def test_sameIDs(self) -> None:
        if not (ROOT / "pyproject.toml").exists():
            raise SkipTest("not running from a source checkout")
        trial = trialIDs()
        pytest_ = pytestIDs()
        self.assertGreater(len(trial), 900)
        self.assertEqual(sorted(pytest_ - trial), [], "pytest collects tests trial does not run")
        self.assertEqual(sorted(trial - pytest_), [], "trial runs tests pytest does not collect")

    def test_recorderConvertsNodeIDs(self) -> None:
        """
        A pytest node id becomes trial's dotted id.
        """

        class Item:
            nodeid = "tests/test_x.py::SomeTests::test_y"

        recorder = _Recorder()
        recorder.pytest_collection_modifyitems([Item()])
        self.assertEqual(recorder.ids, {"tests.test_x.SomeTests.test_y"})


class TemporaryFilesTests(SynchronousTestCase):
    """
    With the project's pytest settings, a test that passes leaves nothing
    in the temporary directory: its C{tmp_path} (where C{conftest.py}
    runs every test) is removed.
    """

    def test_passingTestLeavesNothing(self) -> None:
        if not (ROOT / "pyproject.toml").exists():
            raise SkipTest("not running from a source checkout")
        work = Path(self.mktemp()).resolve()
        temporary = work / "tmp"
        temporary.mkdir(parents=True)
        record = work / "record"
        (work / "test_writes.py").write_text(
            "def test_writes(tmp_path):\n"
            "    (tmp_path / 'data').write_text('data')\n"
            f"    with open({str(record)!r}, 'w') as f:\n"
            "        f.write(str(tmp_path))\n"
        )
        import pytest

        self.patch(tempfile, "tempdir", str(temporary))
        code = pytest.main(
            [
                "-q", "-p", "no:cacheprovider", "-p", "no:xdist", "-c", str(ROOT / "pyproject.toml"),
                "--rootdir", str(work), str(work / "test_writes.py"),
            ]
        )
        self.assertEqual(code, 0)
        written = Path(record.read_text())
        self.assertTrue(written.is_relative_to(temporary), written)
        self.assertFalse(written.exists())
        self.assertEqual([p for p in temporary.rglob("*") if not p.is_dir()], [])
