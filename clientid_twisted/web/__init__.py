# -*- test-case-name: tests.test_web_links -*-
"""
Self-service for account owners: approve or disown a device from the
notice in their INBOX, and a device page signed in to by a link mailed to
that INBOX.

The mailbox is the second factor of the web side: the password (what leaks)
is never enough to change a device, because every capability arrives as
mail, which a device the account refuses cannot read.  See
C{docs/selfservice.md} for the argument and the set-up.

An application of the library, like C{server}: it uses the store and the
identity hasher, and the runnable server puts it on its own listener.
"""
