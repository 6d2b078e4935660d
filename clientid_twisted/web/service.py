# -*- test-case-name: tests.test_web_browser -*-
"""
The self-service site as the runnable server puts it together: links
signed with a key derived from the installation's identity key, device
changes through the server's store, sign-in links delivered into the
local INBOX, or in IMAP gateway mode kept with the account's notices and
APPENDed to the backend INBOX at its next login through the gateway.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from twisted.internet import defer
from twisted.web import server

from clientid_twisted.interfaces import IClientIDStore
from clientid_twisted.server.mailnotice import MailboxAlertObserver
from clientid_twisted.server.users import UserDatabase
from clientid_twisted.web.config import WebConfig
from clientid_twisted.web.links import LinkMaker, LinkSigner, deriveLinkKey
from clientid_twisted.web.resource import SelfServiceSite
from clientid_twisted.web.selfservice import Notice, SelfService
from clientid_twisted.web.sessions import SessionStore

__all__ = ["linkMaker", "selfServiceSite"]


def _looksLikeAnAddress(account: str) -> bool:
    return "@" in account


def linkMaker(web: WebConfig, identityKey: bytes, hostname: str, listener: str) -> LinkMaker:
    """
    The links the notices carry, for the site on C{listener}.
    """
    signer = LinkSigner(deriveLinkKey(identityKey), ttl=web.linkSeconds)
    return LinkMaker(signer, web.linkBase(hostname, listener))


def selfServiceSite(
    web: WebConfig,
    links: LinkMaker,
    store: IClientIDStore,
    dataDir: Path,
    users: UserDatabase,
    hostname: str,
    clock: Any = None,
    gatewayNotices: Any = None,
) -> server.Site:
    """
    The site, for a TLS listener.

    @param gatewayNotices: In IMAP gateway mode, the
        L{PendingNotices <clientid_twisted.gateway.imap.PendingNotices>} the
        gateway APPENDs at an account's next login: sign-in links wait
        there, for any address (the accounts are the backend's, so whether
        one exists is not known here; the answer is the same either way).
    """
    deliver: Callable[[Notice], Any]
    accountExists: Callable[[str], bool]
    if gatewayNotices is not None:
        pending = gatewayNotices

        def deliver(notice: Notice) -> Any:
            pending.addMessage(notice.account, notice.subject, list(notice.lines), links.clock())
            return defer.succeed(None)

        accountExists = _looksLikeAnAddress

    else:
        mailbox = MailboxAlertObserver(dataDir, users, hostname, clock=clock)

        def deliver(notice: Notice) -> Any:
            return mailbox.deliverMessage(notice.account, notice.subject, notice.lines)

        accountExists = users.exists

    service = SelfService(store, links, deliver, accountExists)
    return SelfServiceSite(service, SessionStore(idle=web.sessionIdleSeconds))
