"""
The release's version: the one place it is written.  C{pyproject.toml}
reads it (setuptools' dynamic version), the package exports it as
C{clientid_twisted.__version__}, C{twistd clientid-mail --version} and
C{clientid-admin --version} print it, and the docs show it.

Kept in a module of its own, importing nothing, so the build reads it
without importing Twisted.
"""

__version__ = "0.1.0"
