# -*- test-case-name: tests.test_docs -*-
"""
The documentation (the Markdown pages in C{docs/} and the pydoctor API
reference) builds with Sphinx, warnings treated as errors.
"""

from __future__ import annotations

import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from tests.test_typing import ROOT, requireModules


class SphinxTests(SynchronousTestCase):
    def test_docsBuild(self) -> None:
        """
        C{sphinx -W --keep-going -b html docs OUT} succeeds and writes the
        pages and the API reference.
        """
        requireModules(self, "sphinx", "myst_parser", "pydoctor")
        out = os.path.abspath(self.mktemp())
        result = subprocess.run(
            [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "docs", out],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        self.assertEqual(
            result.returncode,
            0,
            f"Sphinx failed:\n{result.stdout}\n{result.stderr}",
        )
        for page in ["index.html", "embedding.html", "api/index.html", "api/clientid_twisted.html"]:
            self.assertTrue(os.path.exists(os.path.join(out, page)), page)
        # The public modules' names are documented where users import them
        # from (docs/publicapi.py), not in the private modules defining them.
        for name in [
            "clientid_twisted.policy.DevicePolicy",
            "clientid_twisted.policy.ClientIDChecker",
            "clientid_twisted.store.MemoryStore",
            "clientid_twisted.cred.ClientIdentity",
        ]:
            self.assertTrue(os.path.exists(os.path.join(out, "api", f"{name}.html")), name)
        self.assertFalse(os.path.exists(os.path.join(out, "api", "clientid_twisted.policy._engine.DevicePolicy.html")))
