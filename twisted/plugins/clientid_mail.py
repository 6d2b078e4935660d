# -*- test-case-name: tests.test_tap,tests.test_layering -*-
"""
The twistd dropin for C{twistd clientid-mail}.

Kept light: twistd imports every dropin to list them, so the real module
(and the reactor) load only when this plugin is chosen.  This directory must
never get an C{__init__.py}.
"""

from twisted.application.service import ServiceMaker

clientidMail = ServiceMaker(
    "CLIENTID mail server",
    "clientid_twisted.server.tap",
    "SMTP submission and IMAP with the CLIENTID device-identity extension.",
    "clientid-mail",
)
