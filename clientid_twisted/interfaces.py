# -*- test-case-name: tests.test_checker -*-
"""
The seams between the parts of clientid-twisted.

Data flows one way: protocol mixin, then credentials carrying the identity,
then the checker, then the policy, then the store.  Each arrow is one of
these interfaces, so any part can be replaced without touching the others.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import ICredentials

__all__ = [
    "IClientIdentifiedCredentials",
    "IClientIDPolicy",
    "IClientIDStore",
    "IAlertObserver",
    "IPasswordForwardingChecker",
]


# Interface is listed too so that pydoctor, which cannot see Twisted's
# sources, knows this is an interface; the resolution order is unchanged.
class IClientIdentifiedCredentials(ICredentials, Interface):
    """
    Credentials that also tell who is knocking: the CLIENTID presented on the
    connection (if any) and how the connection looks.

    Objects providing this interface keep providing whatever the
    authentication mechanism's credentials provided (L{IUsernamePassword <twisted.cred.credentials.IUsernamePassword>},
    L{IUsernameHashedPassword <twisted.cred.credentials.IUsernameHashedPassword>}, ...) so existing checkers work unchanged.
    """

    clientIdentity = Attribute(
        "The L{clientid_twisted.cred.ClientIdentity} accepted on this "
        "connection, or L{None} when the client sent no valid CLIENTID."
    )
    peer = Attribute("The client's address, an L{twisted.internet.interfaces.IAddress}.")
    protocolName = Attribute('Which protocol the login came over: C{"smtp"} or C{"imap"}.')
    secure = Attribute("L{True} when the connection is encrypted (TLS).")
    credentials = Attribute("The mechanism's own credentials object, unwrapped.")
    host = Attribute(
        "The server's address the client connected to (an IAddress), or L{None}."
    )


class IClientIDPolicy(Interface):
    """
    Decides whether a login may go ahead given the device it came from, and
    learns from how it ended.

    A decision has two halves around the password check, so that a refusal
    costs the same time as a wrong password: L{evaluate} runs first (and may
    ask the store), the caller checks the password whatever the verdict, then
    L{outcome} hears whether the password was right.
    """

    def evaluate(attempt):
        """
        Decide on an attempt before its password is known.

        @param attempt: A L{clientid_twisted.policy.Attempt}.
        @return: A L{Deferred <twisted.internet.defer.Deferred>} firing with a
            L{clientid_twisted.policy.Decision}: C{ACCEPT} (the
            password decides), C{REJECT} (refuse whatever the password) or
            C{TEMPFAIL} (cannot decide now).  It never fails.
        """

    def outcome(decision, passwordAccepted):
        """
        Hear how an attempt ended: record it (devices, counters, events) and
        raise alerts.  Never blocks the login: the caller need not wait.

        @param decision: What L{evaluate} returned for the attempt.
        @param passwordAccepted: Whether the wrapped checker accepted the
            password.
        @return: A L{Deferred <twisted.internet.defer.Deferred>} firing with L{None} once recorded; it never
            fails (errors are logged).
        """


class IClientIDStore(Interface):
    """
    What the policy remembers: devices per account, windowed counters,
    timed locks, small windowed sets, the event history and the key that
    hashes tokens.  Every method returns a L{Deferred <twisted.internet.defer.Deferred>}.

    The decision path is two coarse calls: L{loadState} reads everything one
    decision needs, L{recordOutcome} applies everything it changes,
    atomically.  A backend can serve each with one round trip (one
    transaction, one Lua script).  Tokens never reach a store: only their
    keyed hashes (L{clientid_twisted.cred.IdentityHasher.digest}).

    Time is the store's own (its clock), so frontends sharing a store agree
    on windows and lock ends.

    Read-your-writes: a L{loadState} call sees the effect of every
    L{recordOutcome} called before it on the same store object, even if
    that call's L{Deferred <twisted.internet.defer.Deferred>} has not fired yet.
    """

    def identityKey(candidate):
        """
        The key for hashing tokens kept with the store, so that every
        process using the store agrees.

        @param candidate: Bytes to keep if the store has no key yet; L{None}
            to make a random one.
        @return: A L{Deferred <twisted.internet.defer.Deferred>} firing with the key the store keeps.
        """

    def loadState(query):
        """
        Read what one decision needs.

        @param query: A L{clientid_twisted.store.StateQuery}.
        @return: A L{Deferred <twisted.internet.defer.Deferred>} firing with a
            L{clientid_twisted.store.DecisionState}.
        """

    def recordOutcome(record):
        """
        Apply the changes of one decision atomically.

        @param record: A L{clientid_twisted.store.OutcomeRecord}.
        @return: A L{Deferred <twisted.internet.defer.Deferred>} firing with a
            L{clientid_twisted.store.OutcomeResult}: the events
            recorded (with their time) and the locks newly set.
        """

    def listDevices(account):
        """
        @return: A L{Deferred <twisted.internet.defer.Deferred>} firing with the account's
            L{clientid_twisted.store.DeviceRecord}s, most recently
            seen first.
        """

    def setDeviceState(account, digest, typeName, fingerprint, state, event):
        """
        Set a device's state, creating its record if there is none (an
        operator may approve or revoke a device never seen).

        @param event: An L{clientid_twisted.store.Event} to record
            with the change, or L{None}.
        @return: A L{Deferred <twisted.internet.defer.Deferred>} firing with the new
            L{clientid_twisted.store.DeviceRecord}.
        """

    def renameDevice(account, digest, name, event):
        """
        Set the name the owner gave an existing device, leaving everything
        else of its record as it is.

        @param name: The checked name
            (L{clientid_twisted.policy.checkDeviceName}); L{None}
            removes it.
        @param event: An L{clientid_twisted.store.Event} to record
            with the change, or L{None}.
        @return: A L{Deferred <twisted.internet.defer.Deferred>} firing with the renamed
            L{clientid_twisted.store.DeviceRecord}, or failing with
            L{clientid_twisted.store.UnknownDevice} (and recording
            nothing) if the account has no such device.
        """

    def forgetDevices(account, event):
        """
        Remove every device record of C{account}, approved, pending or
        revoked (the account is gone; a new account of the same name
        starts with none).

        @param event: An L{clientid_twisted.store.Event} to record
            with the change, or L{None}.
        @return: A L{Deferred <twisted.internet.defer.Deferred>} firing with L{None}.
        """

    def setLock(key, seconds, event):
        """
        Lock C{key} for C{seconds} from now (L{None}: until cleared),
        replacing any lock it has.

        @return: A L{Deferred <twisted.internet.defer.Deferred>} firing with the lock's end (C{inf}: none).
        """

    def clearKeys(keys, event):
        """
        Remove locks, counters and sets named by C{keys}.

        @return: A L{Deferred <twisted.internet.defer.Deferred>} firing with L{None}.
        """

    def activeLocks(keys):
        """
        @return: A L{Deferred <twisted.internet.defer.Deferred>} firing with a dict from each of C{keys} that
            is locked now to the lock's end.
        """

    def keepMessage(account, message, limit, seconds):
        """
        Keep a message for C{account}'s INBOX until L{takeMessages} takes
        it: a gateway, which can write into the backend's INBOX only on
        the account's own connection, APPENDs it at the account's next
        login, on whichever frontend sharing the store sees it.

        @param message: The message's bytes (with CRLF line ends).
        @param limit: The most messages kept for the account: the oldest
            go first.
        @param seconds: How long the message is kept if no login takes it.
        @return: A L{Deferred <twisted.internet.defer.Deferred>} firing
            with L{None} once the message is kept.
        """

    def takeMessages(account):
        """
        Remove and return the messages kept for C{account}, in one step:
        of several frontends asking at once, one gets each message.

        @return: A L{Deferred <twisted.internet.defer.Deferred>} firing
            with the messages (L{bytes}) not yet expired, oldest first.
        """

    def listEvents(account, limit):
        """
        @param account: Only this account's events, or L{None} for all.
        @return: A L{Deferred <twisted.internet.defer.Deferred>} firing with up to C{limit} most recent
            L{clientid_twisted.store.Event}s, oldest first.
        """

    def close():
        """
        Finish pending writes and let go of resources.

        @return: A L{Deferred <twisted.internet.defer.Deferred>} firing when done.
        """


class IAlertObserver(Interface):
    """
    Told about security events an account owner or operator should hear of:
    a new device, a right password from a refused device, a lockout.

    Alerts carry the identity type and its keyed fingerprint, never the
    token.
    """

    def alertRaised(alert):
        """
        Handle one alert.  Must return at once and never raise: slow work
        (mail, HTTP) goes on in the background, so no login waits for it.

        @param alert: A L{clientid_twisted.policy.Alert}.
        """


class IPasswordForwardingChecker(ICredentialsChecker, Interface):
    """
    A checker that hands the password to another server (a gateway's
    backend).  L{clientid_twisted.policy.ClientIDChecker} asks its
    policy first and calls C{requestAvatarId} only for a login the policy
    accepts, so a refused device's password never leaves this process; a
    refused login goes to L{refuseUnchecked} instead, which takes as long
    as a refusal by the other server.
    """

    def refuseUnchecked(credentials):
        """
        Refuse without checking the password.

        @return: A Deferred that fails with
            L{UnauthorizedLogin <twisted.cred.error.UnauthorizedLogin>} after
            about as long as the other server takes to refuse a wrong
            password.
        """
