# -*- test-case-name: tests.test_credfactory -*-
"""
L{ClientIDChecker} as a C{twisted.cred} L{ICheckerFactory}, so that
C{--auth} style strings name it wherever Twisted tools accept them
(C{twisted.cred.strcred.makeChecker}, C{AuthOptionMixin})::

    clientid:inner=file:/etc/mail/passwd:mode=allowlist:store=sqlite:///var/lib/clientid.sqlite3

The argument string is a series of C{NAME=VALUE} options separated by
colons.  Values may hold colons themselves (checker strings and store URLs
do): a colon starts a new option only where it is followed by one of the
option names below and C{=}.

    - C{inner=CHECKER} (required): the checker that checks passwords, as an
      C{--auth} string of its own (C{file:PATH}, C{memory:USER:PASSWORD},
      C{unix}, ...), made with C{strcred.makeChecker};
    - C{mode=off|learn|tofu|allowlist}: the device mode (default C{learn},
      or C{[policy] devices} of C{config});
    - C{store=URL}: the CLIENTID store, as C{--store} (default C{memory:}:
      devices are forgotten when the process ends);
    - C{config=PATH}: a C{clientid.toml} whose policy tables
      (C{[policy]}, C{[limits]}, C{[types.NAME]}) configure the policy.

Alerts go to the log.  The store is closed when the reactor shuts down.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from twisted.python.failure import Failure

from zope.interface import implementer

from twisted.cred.credentials import IUsernamePassword
from twisted.cred.strcred import ICheckerFactory
from twisted.plugin import IPlugin

__all__ = ["ClientIDCheckerFactory", "parseArgString", "OPTION_NAMES"]

OPTION_NAMES = ("inner", "mode", "store", "config")

_OPTION_START = re.compile(r":(?=(?:%s)=)" % "|".join(OPTION_NAMES))

_HELP = """
Puts the CLIENTID device policy in front of another checker: the inner
checker checks passwords, the policy decides on the device the client
identified itself as (CLIENTID), and a refusal looks exactly like a wrong
password.

Options, separated by colons (values may contain colons):
  inner=CHECKER   the password checker, itself an --auth string (required)
  mode=MODE       off, learn (default), tofu or allowlist
  store=URL       the CLIENTID store: sqlite:///PATH, memory: (default)
  config=PATH     a clientid.toml for the other policy settings
"""


def parseArgString(argstring: str) -> dict[str, str]:
    """
    Split C{clientid:}'s argument string into its options.

    @raise ValueError: For an unknown or repeated option, or a missing
        C{inner}.
    """
    options: dict[str, str] = {}
    for part in _OPTION_START.split(argstring):
        name, equals, value = part.partition("=")
        if not equals or name not in OPTION_NAMES:
            raise ValueError(
                f"clientid: expected NAME=VALUE with NAME one of {', '.join(OPTION_NAMES)}, "
                f"not {part!r}"
            )
        if name in options:
            raise ValueError(f"clientid: {name}= given twice")
        options[name] = value
    if not options.get("inner"):
        raise ValueError("clientid: inner=CHECKER is required, e.g. inner=file:/path/passwd")
    return options


@implementer(ICheckerFactory, IPlugin)
class ClientIDCheckerFactory:
    """
    Makes a L{clientid_twisted.policy.ClientIDChecker} from a
    C{clientid:...} string.
    """

    authType = "clientid"
    authHelp = _HELP
    argStringFormat = "inner=CHECKER[:mode=MODE][:store=URL][:config=PATH]"
    credentialInterfaces = (IUsernamePassword,)

    def generateChecker(self, argstring: str, reactor: Any = None) -> Any:
        """
        @raise ValueError: For a bad argument string, configuration or store
            URL.
        """
        from twisted.cred import strcred

        from clientid_twisted._configfile import checkTables, loadConfig
        from clientid_twisted.policy._awaiting import AwaitingPolicy
        from clientid_twisted.policy._builder import Authentication, buildAuthentication
        from clientid_twisted.policy._checker import ClientIDChecker
        from clientid_twisted.policy._config import APPLICATION_TABLES, POLICY_TABLES

        if reactor is None:
            from twisted.internet import reactor  # type: ignore[no-redef]
        options = parseArgString(argstring)
        inner = strcred.makeChecker(options["inner"])
        config: dict[str, Any] = {}
        if options.get("config"):
            config = loadConfig(Path(options["config"]), required=True)
            # The policy's tables checked strictly (a typo must not weaken
            # them); a server's own tables are left to the server.
            checkTables(config, POLICY_TABLES, options["config"], unchecked=APPLICATION_TABLES)
        if options.get("mode"):
            config = dict(config)
            config["policy"] = dict(config.get("policy", {}), devices=options["mode"])
        built = buildAuthentication(
            inner,
            config,
            options.get("store") or "memory:",
            dataDir=Path("."),
            reactor=reactor,
            configSource=options.get("config") or "clientid:",
        )

        def ready(authentication: Authentication) -> Authentication:
            reactor.addSystemEventTrigger("before", "shutdown", authentication.store.close)
            return authentication

        built.addCallback(ready)
        now: list[Any] = []

        def seen(result: Any) -> Any:
            now.append(result)
            return result

        built.addBoth(seen)
        if now and isinstance(now[0], Failure):
            built.addErrback(lambda reason: None)
            now[0].raiseException()
        if now:
            return now[0].checker
        # A store that gives its key later (Redis): logins are temporary
        # failures until it has.
        return ClientIDChecker(
            inner, AwaitingPolicy(built.addCallback(lambda a: a.policy)), reactor
        )
