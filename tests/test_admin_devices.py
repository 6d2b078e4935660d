"""
Tests for C{clientid-admin devices|tokens|events}: the CLIENTID store from
the command line, with a data directory or with C{--store} alone.
"""

from __future__ import annotations

import binascii
import io
import json
from pathlib import Path
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from clientid_twisted.admin import main
from clientid_twisted._fingerprint import IdentityHasher
from clientid_twisted._identity import ClientIdentity
from clientid_twisted.policy import _keys as keys
from clientid_twisted.policy._manage import DeviceManager, ManagementError, resultOf
from clientid_twisted._keyfile import loadOrCreateKey
from clientid_twisted.server.users import UserDatabase, usersPath
from clientid_twisted.store._records import APPROVED, PENDING, DeviceUpdate, Event, OutcomeRecord
from clientid_twisted.store import openStore
from clientid_twisted.store._sqlite import SQLiteStore

ALICE = "alice@example.test"
TOKEN = "0f6a2c1e-3b7d-4e55-8f0a-6d2b9c1e7a44"


class AdminDevicesTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.dataDir = Path(self.mktemp()).absolute()
        self.assertEqual(main(["--data-dir", str(self.dataDir), "init"], stdout=io.StringIO()), 0)
        UserDatabase(usersPath(self.dataDir)).addUser(ALICE, "pw")
        self.storePath = self.dataDir / "clientid.sqlite3"
        self.hasher = IdentityHasher(loadOrCreateKey(self.dataDir / "clientid.key"))

    def admin(self, *arguments: str, dataDir: bool = True) -> tuple[int, str, str]:
        stdout, stderr = io.StringIO(), io.StringIO()
        prefix = ["--data-dir", str(self.dataDir)] if dataDir else []
        status = main([*prefix, *arguments], stdout=stdout, stderr=stderr)
        return status, stdout.getvalue(), stderr.getvalue()

    def assertUsageError(self, result: tuple[int, str, str], message: str) -> None:
        status, out, err = result
        self.assertEqual((status, out), (2, ""), err)
        self.assertIn(message, err)
        self.assertNotIn("Traceback", err)

    def store(self) -> SQLiteStore:
        store = SQLiteStore(self.storePath, blocking=True, clock=Clock())
        self.addCleanup(store.close)
        return store

    def seen(self, token: str = TOKEN, state: str = PENDING) -> None:
        """
        The server saw the device (as it records it).
        """
        identity = ClientIdentity("UUID", token)
        store = self.store()
        resultOf(store.identityKey(self.hasher.key))
        resultOf(
            store.recordOutcome(
                OutcomeRecord(
                    device=DeviceUpdate(
                        ALICE, self.hasher.digest(identity), "UUID",
                        self.hasher.fingerprint(identity), "192.0.2.1", "imap", True, create=state,
                    )
                )
            )
        )
        store.close()

    def listed(self, *extra: str, **kw: Any) -> list[dict[str, Any]]:
        status, out, err = self.admin("devices", "list", ALICE, "--json", *extra, **kw)
        self.assertEqual(status, 0, err)
        return json.loads(out)  # type: ignore[no-any-return]

    @property
    def fingerprint(self) -> str:
        return self.hasher.fingerprint(ClientIdentity("UUID", TOKEN))


class DevicesListTests(AdminDevicesTestCase):
    def test_empty(self) -> None:
        self.assertEqual(
            self.admin("devices", "list", ALICE), (0, f"no devices known for {ALICE}\n", "")
        )

    def test_table(self) -> None:
        self.seen()
        status, out, err = self.admin("devices", "list", "Alice@Example.TEST")
        header, row = out.splitlines()
        self.assertEqual(
            header.split(),
            ["TYPE", "FINGERPRINT", "STATE", "FIRST", "SEEN", "LAST", "SEEN", "LAST", "ADDRESS",
             "LOGINS", "FAILURES", "NAME"],
        )
        self.assertEqual(row.split()[:3], ["UUID", self.fingerprint, "pending"])
        self.assertEqual(row.split()[-4:], ["192.0.2.1", "1", "0", "-"])

    def rename(self, name: str) -> None:
        """
        The owner named the device (as the device page does).
        """
        store = self.store()
        digest = self.hasher.digest(ClientIdentity("UUID", TOKEN))
        resultOf(store.renameDevice(ALICE, digest, name, None))
        store.close()

    def test_tableShowsName(self) -> None:
        """
        The owner's name for a device is the table's last column, whole
        (spaces and all).
        """
        self.seen()
        self.rename("Anna's phone \u00e9")
        status, out, err = self.admin("devices", "list", ALICE)
        header, row = out.splitlines()
        self.assertTrue(header.rstrip().endswith("FAILURES  NAME"), header)
        self.assertTrue(row.endswith("0         Anna's phone \u00e9"), row)

    def test_json(self) -> None:
        self.seen()
        [device] = self.listed()
        self.assertEqual(
            {k: device[k] for k in ("account", "type", "fingerprint", "state", "last_address",
                                    "last_protocol", "logins", "failures", "locked_until",
                                    "token_revoked_until")},
            {
                "account": ALICE, "type": "UUID", "fingerprint": self.fingerprint,
                "state": "pending", "last_address": "192.0.2.1", "last_protocol": "imap",
                "logins": 1, "failures": 0, "locked_until": None, "token_revoked_until": None,
            },
        )
        self.assertRegex(device["first_seen"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        self.assertIsNone(device["name"])
        self.rename("Anna's phone")
        self.assertEqual(self.listed()[0]["name"], "Anna's phone")

    def test_showsTokenLocks(self) -> None:
        self.seen(state=APPROVED)
        self.assertEqual(self.admin("tokens", "revoke", "UUID", TOKEN)[0], 0)
        [device] = self.listed()
        self.assertEqual(device["token_revoked_until"], "forever")
        status, out, err = self.admin("devices", "list", ALICE)
        self.assertIn("approved+token-revoked", out)

    def test_unknownAccount(self) -> None:
        self.assertUsageError(
            self.admin("devices", "list", "bob@example.test"), "no such user: bob@example.test"
        )

    def test_invalidAddress(self) -> None:
        self.assertUsageError(self.admin("devices", "list", "not an address"), "invalid address")

    def test_storeAlone(self) -> None:
        """
        --store is enough: no users file needed, no account check.
        """
        self.seen()
        url = f"sqlite://{self.storePath}"
        status, out, err = self.admin("--store", url, "devices", "list", ALICE, "--json", dataDir=False)
        self.assertEqual(status, 0, err)
        self.assertEqual(json.loads(out)[0]["fingerprint"], self.fingerprint)
        self.assertEqual(
            self.admin("devices", "list", "bob@example.test", "--store", url, dataDir=False)[0], 0
        )

    def test_optionsAfterTheCommand(self) -> None:
        self.seen()
        status, out, err = self.admin(
            "devices", "list", ALICE, "--json", "--data-dir", str(self.dataDir), dataDir=False
        )
        self.assertEqual(json.loads(out)[0]["state"], "pending")

    def test_missingStore(self) -> None:
        self.assertUsageError(
            self.admin("--store", "sqlite:///nonexistent/x.sqlite3", "events", dataDir=False),
            "no SQLite store at /nonexistent/x.sqlite3",
        )

    def test_missingDataDir(self) -> None:
        self.assertUsageError(
            self.admin("--data-dir", str(self.dataDir / "nope"), "events", dataDir=False),
            "no data directory",
        )

    def test_memoryStore(self) -> None:
        self.assertUsageError(self.admin("--store", "memory:", "events"), "memory:")

    def test_unknownScheme(self) -> None:
        self.assertUsageError(self.admin("--store", "nosql://x", "events"), "unknown store URL scheme")

    def test_corruptStore(self) -> None:
        self.storePath.write_bytes(b"not a database" * 1000)
        status, out, err = self.admin("events")
        self.assertEqual(status, 1)
        self.assertIn(str(self.storePath), err)

    def test_configuredStore(self) -> None:
        (self.dataDir / "clientid.toml").write_text('[store]\nurl = "sqlite:elsewhere.sqlite3"\n')
        self.storePath.unlink()
        elsewhere = self.dataDir / "elsewhere.sqlite3"
        # Only init (or the server's first start) makes the store.
        self.assertUsageError(self.admin("devices", "approve", ALICE, "UUID", TOKEN), str(elsewhere))
        self.assertFalse(elsewhere.exists())
        self.assertEqual(self.admin("init")[0], 0)
        self.assertEqual(self.admin("devices", "approve", ALICE, "UUID", TOKEN)[0], 0)
        self.assertTrue(elsewhere.exists())
        self.assertFalse(self.storePath.exists())

    def test_badConfig(self) -> None:
        (self.dataDir / "clientid.toml").write_text('[policy]\ndevices = "sometimes"\n')
        self.assertUsageError(self.admin("events"), "[policy] devices")


class DevicesApproveRevokeTests(AdminDevicesTestCase):
    def test_approveByToken(self) -> None:
        status, out, err = self.admin("devices", "approve", ALICE, "uuid", TOKEN)
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(out, f"approved uuid device {self.fingerprint} for {ALICE}\n")
        [device] = self.listed()
        self.assertEqual((device["state"], device["first_seen"]), ("approved", None))

    def test_approveByFingerprint(self) -> None:
        self.seen()
        status, out, err = self.admin("devices", "approve", ALICE, "--fingerprint", self.fingerprint[:8])
        self.assertEqual((status, err), (0, ""))
        [device] = self.listed()
        self.assertEqual(device["state"], "approved")

    def test_revokeByTokenAndFingerprint(self) -> None:
        self.seen(state=APPROVED)
        self.assertEqual(self.admin("devices", "revoke", ALICE, "UUID", TOKEN)[0], 0)
        self.assertEqual(self.listed()[0]["state"], "revoked")
        self.assertEqual(self.admin("devices", "approve", ALICE, "--fingerprint", self.fingerprint)[0], 0)
        self.assertEqual(self.admin("devices", "revoke", ALICE, "--fingerprint", self.fingerprint)[0], 0)
        self.assertEqual(self.listed()[0]["state"], "revoked")

    def test_fingerprintNotFound(self) -> None:
        self.assertUsageError(
            self.admin("devices", "approve", ALICE, "--fingerprint", "abcdef"),
            "has no device with fingerprint abcdef",
        )

    def test_fingerprintAmbiguous(self) -> None:
        store = self.store()
        resultOf(store.identityKey(self.hasher.key))
        for digest in ("abcd1" + "0" * 59, "abcd2" + "0" * 59):
            resultOf(store.setDeviceState(ALICE, digest, "UUID", digest[:16], PENDING, None))
        store.close()
        self.assertUsageError(
            self.admin("devices", "approve", ALICE, "--fingerprint", "abc"), "invalid fingerprint"
        )
        self.assertUsageError(
            self.admin("devices", "approve", ALICE, "--fingerprint", "ABCD"),
            "matches 2 devices",
        )
        self.assertEqual(self.admin("devices", "approve", ALICE, "--fingerprint", "abcd2")[0], 0)
        self.assertEqual(
            {d["fingerprint"]: d["state"] for d in self.listed()},
            {"abcd100000000000": "pending", "abcd200000000000": "approved"},
        )

    def test_badArguments(self) -> None:
        self.assertUsageError(self.admin("devices", "approve", ALICE), "name the device")
        self.assertUsageError(self.admin("devices", "approve", ALICE, "UUID"), "name the device")
        self.assertUsageError(
            self.admin("devices", "approve", ALICE, "UUID", TOKEN, "--fingerprint", "abcd"), "not both"
        )
        self.assertUsageError(self.admin("devices", "approve", ALICE, "U U", TOKEN), "client-id-type")
        self.assertUsageError(self.admin("devices", "revoke", ALICE, "UUID", "tok\x7f"), "client-id-token")
        self.assertUsageError(self.admin("devices", "approve", "bob@example.test", "UUID", TOKEN), "no such user")

    def test_takesEffectOnNextLogin(self) -> None:
        """
        An approval made with the command is seen by a running policy on
        the same store at its next decision.
        """
        from tests.policyharness import PolicyHarness

        server = SQLiteStore(self.storePath, blocking=True, clock=Clock())
        self.addCleanup(server.close)
        key = resultOf(server.identityKey(self.hasher.key))
        harness = PolicyHarness(self, {"policy": {"devices": "allowlist"}}, store=server)
        harness.hasher = harness.policy.hasher = IdentityHasher(key)
        self.assertEqual(harness.login(account=ALICE, token=TOKEN), "refused")
        self.assertEqual(self.admin("devices", "approve", ALICE, "UUID", TOKEN)[0], 0)
        self.assertEqual(harness.login(account=ALICE, token=TOKEN), "ok")
        self.assertEqual(self.admin("devices", "revoke", ALICE, "UUID", TOKEN)[0], 0)
        self.assertEqual(harness.login(account=ALICE, token=TOKEN), "refused")


class DevicesRenameMixin:
    """
    C{devices rename ADDRESS FINGERPRINT NAME} through the command, on
    whichever store the test case's C{admin} reaches: the device page's
    checks, a C{device-renamed} event without the name, output that cannot
    move the terminal, and the exit codes of C{approve} and C{revoke}.
    """

    admin: Any
    assertEqual: Any
    assertIn: Any
    assertNotIn: Any
    assertIsNone: Any
    assertUsageError: Any
    fingerprint: str

    def approved(self, account: str = ALICE) -> None:
        status, out, err = self.admin("devices", "approve", account, "UUID", TOKEN)
        self.assertEqual((status, err), (0, ""))

    def deviceNames(self, account: str = ALICE) -> list[Any]:
        status, out, err = self.admin("devices", "list", account, "--json")
        self.assertEqual(status, 0, err)
        return [d["name"] for d in json.loads(out)]

    def renameEvents(self) -> list[dict[str, Any]]:
        status, out, err = self.admin("events", "--json", "--limit", "100")
        self.assertEqual(status, 0, err)
        return [e for e in json.loads(out) if e["event"] == "device-renamed"]

    def test_rename(self) -> None:
        """
        A fingerprint prefix names the device; the name is kept trimmed,
        printed back, and a C{device-renamed} event says who did it but
        not the name.
        """
        self.approved()
        status, out, err = self.admin(
            "devices", "rename", ALICE, self.fingerprint[:6], "  Anna's phone \u00e9 "
        )
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(
            out, f'renamed UUID device {self.fingerprint} of {ALICE} to "Anna\'s phone \u00e9"\n'
        )
        self.assertEqual(self.deviceNames(), ["Anna's phone \u00e9"])
        [event] = self.renameEvents()
        self.assertEqual(
            (event["account"], event["type"], event["fingerprint"], event["detail"]),
            (ALICE, "UUID", self.fingerprint, "by admin"),
        )
        self.assertNotIn("Anna", json.dumps(event))

    def test_removeName(self) -> None:
        """
        An empty (or blank) name removes the device's name.
        """
        self.approved()
        self.assertEqual(self.admin("devices", "rename", ALICE, self.fingerprint, "laptop")[0], 0)
        status, out, err = self.admin("devices", "rename", ALICE, self.fingerprint, "  ")
        self.assertEqual(
            (status, out, err),
            (0, f"removed the name of UUID device {self.fingerprint} of {ALICE}\n", ""),
        )
        self.assertEqual(self.deviceNames(), [None])
        self.assertEqual(
            [e["detail"] for e in self.renameEvents()], ["by admin", "name removed by admin"]
        )

    def test_refusedNames(self) -> None:
        """
        A name the device page refuses is refused here too (exit 2), with
        the page's reason and without echoing the name; nothing changes
        and no event is recorded.
        """
        self.approved()
        self.assertEqual(self.admin("devices", "rename", ALICE, self.fingerprint, "kept")[0], 0)
        for bad, reason in [
            ("x" * 65, "at most 64 characters"),
            ("red\x1b[31m", "control characters"),
            ("two\nlines", "control characters"),
            ("tab\there", "control characters"),
            ("evil\u202eexe.txt", "control characters"),
            ("zero\u200bwidth", "control characters"),
        ]:
            result = self.admin("devices", "rename", ALICE, self.fingerprint, bad)
            self.assertUsageError(result, reason)
            self.assertNotIn(bad, result[2])
        self.assertEqual(self.deviceNames(), ["kept"])
        self.assertEqual(len(self.renameEvents()), 1)

    def test_unknownDevice(self) -> None:
        """
        A fingerprint of no device of the account: the message C{approve}
        gives, and its exit code (2); nothing is created.
        """
        self.approved()
        self.assertUsageError(
            self.admin("devices", "rename", ALICE, "abcdef12", "x"),
            f"{ALICE} has no device with fingerprint abcdef12",
        )
        self.assertEqual(
            self.admin("devices", "rename", ALICE, "abcdef12", "x")[0],
            self.admin("devices", "revoke", ALICE, "--fingerprint", "abcdef12")[0],
        )
        self.assertUsageError(
            self.admin("devices", "rename", ALICE, "not-hex", "x"), "invalid fingerprint"
        )
        self.assertEqual(self.deviceNames(), [None])
        self.assertEqual(self.renameEvents(), [])

    def test_missingArguments(self) -> None:
        status, out, err = self.admin("devices", "rename", ALICE, self.fingerprint)
        self.assertEqual((status, out), (2, ""))
        self.assertIn("NAME", err)


class DevicesRenameTests(DevicesRenameMixin, AdminDevicesTestCase):
    """
    C{devices rename} on the data directory's SQLite store.
    """

    def test_unknownDevice(self) -> None:
        super().test_unknownDevice()
        # With a data directory, the account must exist, as for approve.
        self.assertUsageError(
            self.admin("devices", "rename", "carol@example.test", self.fingerprint, "x"),
            "no such user: carol@example.test",
        )

    def test_escapedAccount(self) -> None:
        """
        With C{--store} alone the account is not checked; the line printed
        escapes it, so a name chosen to move the terminal cannot.
        """
        url = f"sqlite://{self.storePath}"
        account = "mallory\x1b[2j@example.test"
        status, out, err = self.admin(
            "--store", url, "devices", "approve", account, "UUID", TOKEN, dataDir=False
        )
        self.assertEqual(status, 0, err)
        status, out, err = self.admin(
            "--store", url, "devices", "rename", account, self.fingerprint, "x", dataDir=False
        )
        self.assertEqual(
            (status, out, err),
            (0, f'renamed UUID device {self.fingerprint} of mallory\\x1b[2j@example.test to "x"\n', ""),
        )


class RedisDevicesRenameTests(DevicesRenameMixin, SynchronousTestCase):
    """
    C{devices rename} with C{--store redis://...} alone, on a real
    C{redis-server}, as for several frontends sharing one store.
    """

    def setUp(self) -> None:
        from tests.redisserver import requireRedisServer, sharedRedisServer, uniquePrefix

        requireRedisServer()
        self.url = f"{sharedRedisServer().url}?prefix={uniquePrefix(self)}"
        status, out, err = self.admin("init")
        self.assertEqual(status, 0, err)
        store = openStore(self.url, None, clock=Clock(), blocking=True)
        self.addCleanup(store.close)
        self.hasher = IdentityHasher(resultOf(store.identityKey(None)))

    def admin(self, *arguments: str) -> tuple[int, str, str]:
        stdout, stderr = io.StringIO(), io.StringIO()
        status = main(["--store", self.url, *arguments], stdout=stdout, stderr=stderr)
        return status, stdout.getvalue(), stderr.getvalue()

    assertUsageError = AdminDevicesTestCase.assertUsageError

    @property
    def fingerprint(self) -> str:
        return self.hasher.fingerprint(ClientIdentity("UUID", TOKEN))

    def test_unknownDevice(self) -> None:
        super().test_unknownDevice()
        # No account check with --store: an account without devices has
        # no such device.
        self.assertUsageError(
            self.admin("devices", "rename", "carol@example.test", self.fingerprint, "x"),
            "carol@example.test has no device with fingerprint",
        )

    def test_program(self) -> None:
        """
        The installed program's entry point does the same, and a second
        frontend's view (a fresh store connection) sees the name.
        """
        import subprocess
        import sys

        self.approved()
        result = subprocess.run(
            [sys.executable, "-m", "clientid_twisted.admin", "--store", self.url,
             "devices", "rename", ALICE, self.fingerprint[:8], "Anna's phone"],
            capture_output=True, text=True, timeout=60,
        )
        self.assertEqual(
            (result.returncode, result.stdout, result.stderr),
            (0, f'renamed UUID device {self.fingerprint} of {ALICE} to "Anna\'s phone"\n', ""),
        )
        store = openStore(self.url, None, clock=Clock(), blocking=True)
        self.addCleanup(store.close)
        [record] = resultOf(store.listDevices(ALICE))
        self.assertEqual(record.name, "Anna's phone")


class UserRemoveTests(AdminDevicesTestCase):
    """
    C{user remove}: a new account of the same name starts clean.
    """

    def setUp(self) -> None:
        super().setUp()
        self.maildir = self.dataDir / "mail" / ALICE
        (self.maildir / "new").mkdir(parents=True)
        (self.maildir / "new" / "1.M1P1.host").write_bytes(b"Subject: old mail\r\n\r\n")
        self.seen(TOKEN, APPROVED)
        self.seen("22222222-2222-4222-8222-222222222222", PENDING)
        store = self.store()
        for key in keys.accountKeys(ALICE):
            resultOf(store.setLock(key, None, None))
        store.close()

    def readd(self) -> None:
        stdout, stderr = io.StringIO(), io.StringIO()
        status = main(
            ["--data-dir", str(self.dataDir), "user", "add", ALICE, "--password-stdin"],
            stdin=io.StringIO("new\n"), stdout=stdout, stderr=stderr,
        )
        self.assertEqual(status, 0, stderr.getvalue())

    def assertStoreClean(self) -> None:
        store = self.store()
        self.assertEqual(resultOf(store.listDevices(ALICE)), [])
        self.assertEqual(resultOf(store.activeLocks(keys.accountKeys(ALICE))), {})
        store.close()

    def test_removeEverything(self) -> None:
        status, out, err = self.admin("user", "remove", ALICE)
        self.assertEqual(status, 0, err)
        self.assertIn("its mail deleted", out)
        self.assertFalse(self.maildir.exists())
        self.assertStoreClean()
        self.readd()
        self.assertEqual(self.listed(), [])
        self.assertFalse((self.maildir / "new").exists())

    def test_keepMail(self) -> None:
        status, out, err = self.admin("user", "remove", ALICE, "--keep-mail")
        self.assertEqual(status, 0, err)
        self.assertFalse(self.maildir.exists())
        [aside] = (self.dataDir / "mail-removed").iterdir()
        self.assertTrue(aside.name.startswith(ALICE + "."))
        self.assertIn(str(aside), out)
        self.assertEqual(
            (aside / "new" / "1.M1P1.host").read_bytes(), b"Subject: old mail\r\n\r\n"
        )
        self.assertStoreClean()


class TokensTests(AdminDevicesTestCase):
    def manager(self) -> DeviceManager:
        return DeviceManager(self.store(), self.hasher)

    def locks(self) -> dict[str, float]:
        digest = self.hasher.digest(ClientIdentity("UUID", TOKEN))
        return resultOf(self.store().activeLocks(keys.tokenKeys(digest)))  # type: ignore[no-any-return]

    def test_revokeForever(self) -> None:
        status, out, err = self.admin("tokens", "revoke", "UUID", TOKEN)
        self.assertEqual(out, f"revoked UUID token {self.fingerprint} on every account, until unlocked\n")
        digest = self.hasher.digest(ClientIdentity("UUID", TOKEN))
        self.assertEqual(self.locks(), {keys.tokenRevoked(digest): float("inf")})

    def test_revokeForAWhile(self) -> None:
        status, out, err = self.admin("tokens", "revoke", "UUID", TOKEN, "--for", "3600")
        self.assertEqual(status, 0, err)
        self.assertIn("on every account, until 2", out)
        [until] = self.locks().values()
        self.assertLess(until, float("inf"))

    def test_revokeBadDuration(self) -> None:
        self.assertUsageError(self.admin("tokens", "revoke", "UUID", TOKEN, "--for", "-5"), "--for")
        status, out, err = self.admin("tokens", "revoke", "UUID", TOKEN, "--for", "soon")
        self.assertEqual(status, 2)

    def test_unlock(self) -> None:
        """
        Unlocking lifts the revocation and the automatic lock, and forgets
        the failures counted against the token.
        """
        digest = self.hasher.digest(ClientIdentity("UUID", TOKEN))
        store = self.store()
        resultOf(store.setLock(keys.tokenLocked(digest), 900.0, None))
        resultOf(store.setLock(keys.tokenRevoked(digest), None, None))
        store.close()
        status, out, err = self.admin("tokens", "unlock", "UUID", TOKEN)
        self.assertEqual(out, f"unlocked UUID token {self.fingerprint}\n")
        self.assertEqual(self.locks(), {})

    def test_noTokenInStore(self) -> None:
        self.admin("tokens", "revoke", "UUID", TOKEN)
        self.admin("devices", "approve", ALICE, "UUID", TOKEN)
        self.admin("tokens", "unlock", "UUID", TOKEN)
        for path in self.dataDir.rglob("*"):
            if path.is_file():
                self.assertNotIn(TOKEN.encode(), path.read_bytes(), path)

    def test_configuredKey(self) -> None:
        (self.dataDir / "k").write_text(binascii.hexlify(b"z" * 32).decode())
        (self.dataDir / "clientid.toml").write_text('[store]\nkey_file = "k"\n')
        status, out, err = self.admin("tokens", "revoke", "UUID", TOKEN)
        self.assertIn(IdentityHasher(b"z" * 32).fingerprint(ClientIdentity("UUID", TOKEN)), out)


class EventsTests(AdminDevicesTestCase):
    def setUp(self) -> None:
        super().setUp()
        store = self.store()
        resultOf(store.identityKey(self.hasher.key))
        for n in range(5):
            account = ALICE if n % 2 == 0 else "bob@example.test"
            resultOf(
                store.recordOutcome(
                    OutcomeRecord(events=(Event(f"kind-{n}", account, "UUID", "f" * 16, "192.0.2.1", "smtp"),))
                )
            )
        store.close()

    def test_table(self) -> None:
        status, out, err = self.admin("events")
        lines = out.splitlines()
        self.assertEqual(lines[0].split(), ["TIME", "EVENT", "ACCOUNT", "TYPE", "FINGERPRINT", "ADDRESS", "DETAIL"])
        self.assertEqual([line.split()[2] for line in lines[1:]], [f"kind-{n}" for n in range(5)])

    def test_accountAndLimit(self) -> None:
        status, out, err = self.admin("events", "--account", ALICE, "--limit", "2", "--json")
        self.assertEqual([e["event"] for e in json.loads(out)], ["kind-2", "kind-4"])
        self.assertEqual(json.loads(out)[0]["account"], ALICE)

    def test_badLimit(self) -> None:
        self.assertUsageError(self.admin("events", "--limit", "0"), "--limit")

    def test_unknownAccount(self) -> None:
        self.assertUsageError(self.admin("events", "--account", "carol@example.test"), "no such user")


class DeviceManagerTests(SynchronousTestCase):
    def test_notBlocking(self) -> None:
        from twisted.internet import defer

        class Later:
            def listEvents(self, account: Any, limit: int) -> Any:
                return defer.Deferred()

        manager = DeviceManager(Later(), IdentityHasher(b"k" * 32))  # type: ignore[arg-type]
        self.assertRaises(RuntimeError, manager.events, None, 1)

    def test_nameTheDevice(self) -> None:
        from clientid_twisted.store._memory import MemoryStore

        manager = DeviceManager(MemoryStore(Clock()), IdentityHasher(b"k" * 32))
        self.assertRaises(ManagementError, manager.approve, ALICE)
