# -*- test-case-name: tests.test_credfactory,tests.test_layering -*-
"""
The C{twisted.cred} checker factory dropin: C{clientid:inner=...} strings
(C{--auth} and C{strcred.makeChecker}) make a
L{clientid_twisted.policy.ClientIDChecker}.

Kept light: every Twisted tool that lists checkers imports this module; the
policy, store and reactor load only when a checker is made.  This directory
must never get an C{__init__.py}.
"""

from clientid_twisted.policy import ClientIDCheckerFactory

theClientIDCheckerFactory = ClientIDCheckerFactory()
