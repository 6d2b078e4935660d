"""
pytest glue: trial's C{mktemp} makes paths relative to the working
directory (trial runs in C{_trial_temp}); under pytest, run each test in its
own temporary directory so nothing lands in the checkout.
"""

import pytest


@pytest.fixture(autouse=True)
def _inTemporaryDirectory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
