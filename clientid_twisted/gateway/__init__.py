# -*- test-case-name: tests.test_gateway_config -*-
"""
Gateway mode: CLIENTID and the device policy in front of an existing IMAP
(Dovecot) and SMTP submission (Postfix) server, which keeps the mailboxes
and checks the passwords (docs/gateway.md).

The shared parts live here: L{clientid_twisted.gateway.config} reads the
C{[gateway]} table and the backend endpoint strings,
L{clientid_twisted.gateway.backend} connects to a backend (timeout, TLS or
STARTTLS, certificate checks) and reports outages once.
"""
