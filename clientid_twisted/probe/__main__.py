# -*- test-case-name: tests.test_probe -*-
"""
C{python -m clientid_twisted.probe}: the same as C{clientid-probe}.
"""

import sys

from clientid_twisted.probe.cli import main

if __name__ == "__main__":
    sys.exit(main())
