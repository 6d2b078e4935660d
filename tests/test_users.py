"""
Tests for L{clientid_twisted.server.users}: the account file and the scrypt
checker.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import threading
import unicodedata
from pathlib import Path
from typing import Any

from zope.interface.verify import verifyObject

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword, UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SynchronousTestCase, TestCase

from clientid_twisted.cred import identifyCredentials
from clientid_twisted._errors import TemporaryAuthenticationFailure
from clientid_twisted._identity import ClientIdentity
from clientid_twisted.server import users as usersModule
from clientid_twisted.server.users import (
    InvalidAddress,
    ScryptChecker,
    UnknownUser,
    UserDatabase,
    UserDatabaseError,
    UserExists,
    hashPassword,
    normalizeAddress,
    usersPath,
    verifyPassword,
)


class ManualThreadPool:
    """
    Stands in for a L{ThreadPool}: keeps the work until L{runAll}, so a test
    sees what would have run off the reactor thread.
    """

    def __init__(self) -> None:
        self.pending: list[Any] = []

    def callInThreadWithCallback(
        self, onResult: Any, f: Any, *a: Any, **kw: Any
    ) -> None:
        self.pending.append((onResult, f, a, kw))

    def runAll(self) -> None:
        while self.pending:
            onResult, f, a, kw = self.pending.pop(0)
            try:
                result = f(*a, **kw)
            except BaseException:
                onResult(False, Failure())
            else:
                onResult(True, result)


class ImmediateReactor:
    """
    Just enough reactor for C{deferToThreadPool}.
    """

    def __init__(self, threadpool: Any = None) -> None:
        self.threadpool = threadpool

    def callFromThread(self, f: Any, *a: Any, **kw: Any) -> None:
        f(*a, **kw)

    def getThreadPool(self) -> Any:
        return self.threadpool


def newDatabase(testCase: SynchronousTestCase) -> UserDatabase:
    return UserDatabase(usersPath(Path(testCase.mktemp())))


class NormalizeAddressTests(SynchronousTestCase):
    """
    Account names are ASCII C{local@domain}, lower-cased, never a path.
    """

    def test_valid(self) -> None:
        self.assertEqual(normalizeAddress("Alice@Example.ORG"), "alice@example.org")
        self.assertEqual(
            normalizeAddress("a.b+tag@mail-1.example"), "a.b+tag@mail-1.example"
        )
        self.assertEqual(normalizeAddress("root@localhost"), "root@localhost")

    def test_invalid(self) -> None:
        for address in [
            "",
            "alice",
            "@example.org",
            "alice@",
            "a@b@c",
            "al ice@example.org",
            "alice@example.org ",
            '"al ice"@example.org',
            "alicé@example.org",
            "alice@exämple.org",
            "a/b@example.org",
            "../x@example.org",
            ".alice@example.org",
            "alice@example..org",
            "alice@-example.org",
            "alice\n@example.org",
            "a" * 65 + "@example.org",
            "a@" + ".".join(["b" * 60] * 5),
        ]:
            with self.subTest(address=address):
                self.assertRaises(InvalidAddress, normalizeAddress, address)

    def test_invalidIsValueError(self) -> None:
        self.assertTrue(issubclass(InvalidAddress, ValueError))


class PasswordHashTests(SynchronousTestCase):
    """
    Passwords are stored as self-describing scrypt hashes.
    """

    def test_format(self) -> None:
        scheme, n, r, p, salt, digest = hashPassword("hunter2").split("$")
        self.assertEqual((scheme, n, r, p), ("scrypt", "16384", "8", "1"))
        self.assertEqual(len(base64.b64decode(salt)), 16)
        self.assertEqual(len(base64.b64decode(digest)), 32)

    def test_noPasswordInHash(self) -> None:
        password = "correct horse battery staple"
        passwordHash = hashPassword(password)
        self.assertNotIn(password, passwordHash)
        self.assertNotIn(base64.b64encode(password.encode()).decode(), passwordHash)

    def test_salted(self) -> None:
        """
        The same password hashes differently each time.
        """
        self.assertNotEqual(hashPassword("same"), hashPassword("same"))

    def test_verify(self) -> None:
        passwordHash = hashPassword("hunter2")
        self.assertTrue(verifyPassword(passwordHash, "hunter2"))
        self.assertTrue(verifyPassword(passwordHash, b"hunter2"))
        self.assertFalse(verifyPassword(passwordHash, "hunter3"))
        self.assertFalse(verifyPassword(passwordHash, ""))

    def test_unicodeNormalized(self) -> None:
        """
        Composed and decomposed spellings of a password are one password,
        whether given as text or UTF-8 bytes.
        """
        composed = unicodedata.normalize("NFC", "pässwörd")
        decomposed = unicodedata.normalize("NFD", "pässwörd")
        self.assertNotEqual(composed, decomposed)
        passwordHash = hashPassword(composed)
        self.assertTrue(verifyPassword(passwordHash, decomposed))
        self.assertTrue(verifyPassword(passwordHash, decomposed.encode("utf-8")))

    def test_notUTF8Bytes(self) -> None:
        passwordHash = hashPassword(b"\xff\xfe")
        self.assertTrue(verifyPassword(passwordHash, b"\xff\xfe"))
        self.assertFalse(verifyPassword(passwordHash, b"\xff\xff"))

    def test_malformedHashMatchesNothing(self) -> None:
        good = hashPassword("x")
        _, n, r, p, salt, digest = good.split("$")
        for bad in [
            "",
            "plain",
            "x",
            good.replace("scrypt", "md5", 1),
            f"scrypt${n}${r}${p}${salt}",
            f"scrypt$abc${r}${p}${salt}${digest}",
            f"scrypt$1000${r}${p}${salt}${digest}",
            f"scrypt$1048576$32${p}${salt}${digest}",
            f"scrypt${n}${r}${p}$!!!${digest}",
            f"scrypt${n}${r}${p}${salt}$",
        ]:
            with self.subTest(bad=bad):
                self.assertFalse(verifyPassword(bad, "x"))


class UserDatabaseTests(SynchronousTestCase):
    """
    L{UserDatabase} keeps accounts in a JSON file.
    """

    def setUp(self) -> None:
        self.users = newDatabase(self)

    def test_emptyWhenMissing(self) -> None:
        self.assertEqual(self.users.listUsers(), [])
        self.assertFalse(self.users.exists("alice@example.org"))
        self.assertIsNone(self.users.passwordHash("alice@example.org"))

    def test_addUser(self) -> None:
        self.users.addUser("Alice@Example.org", "hunter2")
        self.assertTrue(self.users.exists("alice@example.org"))
        self.assertTrue(self.users.exists("ALICE@EXAMPLE.ORG"))
        passwordHash = self.users.passwordHash("alice@EXAMPLE.org")
        assert passwordHash is not None
        self.assertTrue(verifyPassword(passwordHash, "hunter2"))

    def test_fileFormat(self) -> None:
        """
        The file is a JSON object from lower-cased addresses to scrypt hashes
        and holds no password.
        """
        self.users.addUser("Alice@Example.org", "hunter2")
        text = self.users.path.read_text()
        self.assertNotIn("hunter2", text)
        data = json.loads(text)
        self.assertEqual(list(data), ["alice@example.org"])
        self.assertTrue(data["alice@example.org"].startswith("scrypt$16384$8$1$"))

    def test_fileMode(self) -> None:
        self.users.addUser("alice@example.org", "hunter2")
        self.assertEqual(stat.S_IMODE(os.stat(self.users.path).st_mode), 0o600)

    def test_noTemporaryFilesLeft(self) -> None:
        self.users.addUser("alice@example.org", "hunter2")
        self.users.addUser("bob@example.org", "hunter2")
        self.assertEqual(
            sorted(p.name for p in self.users.path.parent.iterdir()),
            ["users.json", "users.json.lock"],
        )

    def test_listUsersSorted(self) -> None:
        for address in ["carol@example.org", "Alice@example.org", "bob@example.org"]:
            self.users.addUser(address, "pw")
        self.assertEqual(
            self.users.listUsers(),
            ["alice@example.org", "bob@example.org", "carol@example.org"],
        )

    def test_addExisting(self) -> None:
        self.users.addUser("alice@example.org", "one")
        before = self.users.passwordHash("alice@example.org")
        e = self.assertRaises(
            UserExists, self.users.addUser, "ALICE@example.org", "two"
        )
        self.assertIsInstance(e, ValueError)
        self.assertIn("alice@example.org", str(e))
        self.assertEqual(self.users.passwordHash("alice@example.org"), before)

    def test_addInvalidAddress(self) -> None:
        e = self.assertRaises(
            InvalidAddress, self.users.addUser, "not an address", "pw"
        )
        self.assertIn("local@domain", str(e))
        self.assertFalse(self.users.path.exists())

    def test_addEmptyPassword(self) -> None:
        self.assertRaises(ValueError, self.users.addUser, "alice@example.org", "")
        self.assertEqual(self.users.listUsers(), [])

    def test_setPassword(self) -> None:
        self.users.addUser("alice@example.org", "old")
        self.users.setPassword("Alice@example.org", "new")
        passwordHash = self.users.passwordHash("alice@example.org")
        assert passwordHash is not None
        self.assertTrue(verifyPassword(passwordHash, "new"))
        self.assertFalse(verifyPassword(passwordHash, "old"))

    def test_setPasswordUnknown(self) -> None:
        e = self.assertRaises(
            UnknownUser, self.users.setPassword, "bob@example.org", "x"
        )
        self.assertIsInstance(e, KeyError)
        self.assertEqual(str(e), "no such user: bob@example.org")

    def test_setPasswordEmpty(self) -> None:
        self.users.addUser("alice@example.org", "old")
        self.assertRaises(ValueError, self.users.setPassword, "alice@example.org", "")
        passwordHash = self.users.passwordHash("alice@example.org")
        assert passwordHash is not None
        self.assertTrue(verifyPassword(passwordHash, "old"))

    def test_removeUser(self) -> None:
        self.users.addUser("alice@example.org", "pw")
        self.users.addUser("bob@example.org", "pw")
        self.users.removeUser("ALICE@example.org")
        self.assertEqual(self.users.listUsers(), ["bob@example.org"])

    def test_removeUnknown(self) -> None:
        e = self.assertRaises(UnknownUser, self.users.removeUser, "bob@example.org")
        self.assertEqual(str(e), "no such user: bob@example.org")
        e = self.assertRaises(UnknownUser, self.users.removeUser, "not an address")
        self.assertIn("no such user", str(e))

    def test_invalidAddressLookups(self) -> None:
        self.assertFalse(self.users.exists("not an address"))
        self.assertIsNone(self.users.passwordHash("a/b@example.org"))


class SharedFileTests(SynchronousTestCase):
    """
    Changes another process makes to the file show up without a restart.
    """

    def setUp(self) -> None:
        self.server = newDatabase(self)
        self.admin = UserDatabase(self.server.path)

    def test_addSeen(self) -> None:
        self.assertFalse(self.server.exists("alice@example.org"))
        self.admin.addUser("alice@example.org", "pw")
        self.assertTrue(self.server.exists("alice@example.org"))

    def test_removeSeen(self) -> None:
        self.admin.addUser("alice@example.org", "pw")
        self.assertTrue(self.server.exists("alice@example.org"))
        self.admin.removeUser("alice@example.org")
        self.assertFalse(self.server.exists("alice@example.org"))

    def test_passwordChangeSeen(self) -> None:
        """
        A new hash of the same length (the file's size does not change) is
        still noticed.
        """
        self.admin.addUser("alice@example.org", "old")
        before = self.server.passwordHash("alice@example.org")
        self.admin.setPassword("alice@example.org", "new")
        after = self.server.passwordHash("alice@example.org")
        self.assertNotEqual(before, after)
        assert after is not None
        self.assertTrue(verifyPassword(after, "new"))

    def test_fileDeletedSeen(self) -> None:
        self.admin.addUser("alice@example.org", "pw")
        self.assertTrue(self.server.exists("alice@example.org"))
        self.server.path.unlink()
        self.assertFalse(self.server.exists("alice@example.org"))

    def test_writesDoNotLoseOtherUpdates(self) -> None:
        """
        A change re-reads the file first, so it keeps what another instance
        added since this one last looked.
        """
        self.server.listUsers()
        self.admin.addUser("alice@example.org", "pw")
        self.server.addUser("bob@example.org", "pw")
        self.assertEqual(
            UserDatabase(self.server.path).listUsers(),
            ["alice@example.org", "bob@example.org"],
        )

    def test_unchangedFileNotReparsed(self) -> None:
        """
        A lookup costs a C{stat}; the file is parsed only when it changed.
        """
        self.admin.addUser("alice@example.org", "pw")
        parses = []
        original = self.server._parse

        def counting() -> dict[str, str]:
            parses.append(1)
            return original()

        self.patch(self.server, "_parse", counting)
        for _ in range(3):
            self.assertTrue(self.server.exists("alice@example.org"))
        self.assertEqual(len(parses), 1)
        self.admin.addUser("bob@example.org", "pw")
        self.assertTrue(self.server.exists("bob@example.org"))
        self.assertEqual(len(parses), 2)

    def test_writersExcludeEachOther(self) -> None:
        """
        A change waits for the lock another writer holds.
        """
        import fcntl

        self.admin.listUsers()
        self.server.path.parent.mkdir(parents=True, exist_ok=True)
        lockPath = self.server.path.with_name("users.json.lock")
        fd = os.open(lockPath, os.O_RDWR | os.O_CREAT, 0o600)
        self.addCleanup(os.close, fd)
        fcntl.flock(fd, fcntl.LOCK_EX)
        writer = threading.Thread(target=self.admin.addUser, args=("a@b.example", "pw"))
        writer.start()
        writer.join(1.0)
        stillWaiting = writer.is_alive()
        fcntl.flock(fd, fcntl.LOCK_UN)
        writer.join(10)
        self.assertTrue(stillWaiting)
        self.assertTrue(self.server.exists("a@b.example"))


class CorruptFileTests(SynchronousTestCase):
    """
    A corrupt file is reported clearly and never replaced.
    """

    def setUp(self) -> None:
        self.users = newDatabase(self)
        self.users.addUser("alice@example.org", "pw")

    def corrupt(self, text: str) -> None:
        self.users.path.write_text(text)

    def test_syntaxError(self) -> None:
        self.corrupt('{\n  "alice@example.org": \n')
        e = self.assertRaises(UserDatabaseError, self.users.listUsers)
        self.assertIn(str(self.users.path), str(e))
        self.assertIn("line 3", str(e))
        self.assertIsInstance(e, ValueError)

    def test_wrongShape(self) -> None:
        for text in ['["alice@example.org"]', '{"alice@example.org": 1}']:
            with self.subTest(text=text):
                self.corrupt(text)
                e = self.assertRaises(
                    UserDatabaseError, self.users.exists, "x@y.example"
                )
                self.assertIn("expected a JSON object", str(e))

    def test_notReplacedByChanges(self) -> None:
        self.corrupt("{garbage")
        self.assertRaises(
            UserDatabaseError, self.users.addUser, "bob@example.org", "pw"
        )
        self.assertRaises(UserDatabaseError, self.users.removeUser, "alice@example.org")
        self.assertEqual(self.users.path.read_text(), "{garbage")

    def test_failedWriteKeepsOldFile(self) -> None:
        """
        A write that fails half-way leaves the previous file whole and no
        temporary file behind.
        """
        before = self.users.path.read_bytes()

        def failingSync(fd: int) -> None:
            raise OSError("disk full")

        self.patch(usersModule.os, "fsync", failingSync)
        self.assertRaises(OSError, self.users.addUser, "bob@example.org", "pw")
        self.assertEqual(self.users.path.read_bytes(), before)
        self.assertEqual(
            sorted(p.name for p in self.users.path.parent.iterdir()),
            ["users.json", "users.json.lock"],
        )


class ScryptCheckerTests(SynchronousTestCase):
    """
    L{ScryptChecker} checks passwords in a thread pool.
    """

    def setUp(self) -> None:
        self.users = newDatabase(self)
        self.users.addUser("alice@example.org", "hunter2")
        self.threadpool = ManualThreadPool()
        self.checker = ScryptChecker(
            self.users, reactor=ImmediateReactor(), threadpool=self.threadpool
        )

    def check(self, credentials: Any) -> Any:
        d = self.checker.requestAvatarId(credentials)
        self.threadpool.runAll()
        return d

    def test_interface(self) -> None:
        self.assertTrue(verifyObject(ICredentialsChecker, self.checker))
        self.assertEqual(self.checker.credentialInterfaces, (IUsernamePassword,))

    def test_rightPassword(self) -> None:
        d = self.check(UsernamePassword(b"alice@example.org", b"hunter2"))
        self.assertEqual(self.successResultOf(d), b"alice@example.org")

    def test_avatarIdLowerCase(self) -> None:
        d = self.check(UsernamePassword(b"Alice@EXAMPLE.org", b"hunter2"))
        self.assertEqual(self.successResultOf(d), b"alice@example.org")

    def test_wrongPassword(self) -> None:
        d = self.check(UsernamePassword(b"alice@example.org", b"hunter3"))
        self.failureResultOf(d, UnauthorizedLogin)

    def test_unknownUser(self) -> None:
        d = self.check(UsernamePassword(b"bob@example.org", b"hunter2"))
        self.failureResultOf(d, UnauthorizedLogin)

    def test_notUTF8Username(self) -> None:
        d = self.check(UsernamePassword(b"alice\xff@example.org", b"hunter2"))
        self.failureResultOf(d, UnauthorizedLogin)

    def test_notAnAddress(self) -> None:
        d = self.check(UsernamePassword(b"alice", b"hunter2"))
        self.failureResultOf(d, UnauthorizedLogin)

    def test_unknownUserCostsOneScrypt(self) -> None:
        """
        An unknown account costs the same scrypt as a known one, with the
        same parameters, so timing does not reveal which accounts exist.
        """
        calls: list[tuple[Any, ...]] = []
        original = usersModule._scrypt

        def recording(password: bytes, salt: bytes, *rest: Any) -> bytes:
            calls.append(rest)
            return original(password, salt, *rest)

        self.patch(usersModule, "_scrypt", recording)
        for username in [b"alice@example.org", b"bob@example.org", b"\xff", b"x"]:
            with self.subTest(username=username):
                del calls[:]
                d = self.check(UsernamePassword(username, b"wrong"))
                self.failureResultOf(d, UnauthorizedLogin)
                self.assertEqual(calls, [(16384, 8, 1, 32)])

    def test_wrappedCredentials(self) -> None:
        """
        Credentials carrying a client identity forward C{username} and
        C{password}.
        """
        inner: Any = UsernamePassword(b"alice@example.org", b"hunter2")
        credentials = identifyCredentials(
            inner,
            ClientIdentity("UUID", "token"),
            None,
            "smtp",
            True,
        )
        self.assertEqual(
            self.successResultOf(self.check(credentials)), b"alice@example.org"
        )

    def test_noPasswordAttribute(self) -> None:
        """
        Credentials that only offer C{checkPassword} cannot be checked
        against a hash: refused, and C{checkPassword} is never trusted.
        """

        class OnlyCheck:
            username = b"alice@example.org"

            def checkPassword(self, password: bytes) -> bool:
                return True

        d = self.check(OnlyCheck())
        self.failureResultOf(d, UnauthorizedLogin)

    def test_corruptDatabase(self) -> None:
        """
        An unreadable database is a temporary failure, not a wrong password.
        """
        self.users.path.write_text("{")
        d = self.check(UsernamePassword(b"alice@example.org", b"hunter2"))
        self.failureResultOf(d, TemporaryAuthenticationFailure)

    def test_kdfNotOnCallingThread(self) -> None:
        """
        Nothing is decided until the thread pool has run the work.
        """
        calls: list[int] = []
        original = usersModule._scrypt

        def counting(*a: Any) -> bytes:
            calls.append(1)
            return original(*a)

        self.patch(usersModule, "_scrypt", counting)
        d = self.checker.requestAvatarId(
            UsernamePassword(b"alice@example.org", b"hunter2")
        )
        self.assertNoResult(d)
        self.assertEqual(calls, [])
        self.assertEqual(len(self.threadpool.pending), 1)
        self.threadpool.runAll()
        self.assertEqual(calls, [1])
        self.assertEqual(self.successResultOf(d), b"alice@example.org")

    def test_reactorThreadPoolByDefault(self) -> None:
        checker = ScryptChecker(self.users, reactor=ImmediateReactor(self.threadpool))
        d = checker.requestAvatarId(UsernamePassword(b"alice@example.org", b"hunter2"))
        self.assertEqual(len(self.threadpool.pending), 1)
        self.threadpool.runAll()
        self.assertEqual(self.successResultOf(d), b"alice@example.org")


class ScryptCheckerThreadTests(TestCase):
    """
    With a real reactor and thread pool, scrypt runs in a worker thread.
    """

    def test_kdfRunsInAThread(self) -> Deferred[None]:
        users = newDatabase(self)
        users.addUser("alice@example.org", "hunter2")
        threadpool = ThreadPool(1, 1)
        threadpool.start()
        self.addCleanup(threadpool.stop)
        threads: list[int] = []
        original = usersModule._scrypt

        def recording(*a: Any) -> bytes:
            threads.append(threading.get_ident())
            return original(*a)

        self.patch(usersModule, "_scrypt", recording)
        from twisted.internet import reactor

        checker = ScryptChecker(users, reactor=reactor, threadpool=threadpool)
        d = checker.requestAvatarId(UsernamePassword(b"alice@example.org", b"hunter2"))

        def checked(avatarId: bytes) -> None:
            self.assertEqual(avatarId, b"alice@example.org")
            self.assertEqual(len(threads), 1)
            self.assertNotEqual(threads[0], threading.get_ident())

        return d.addCallback(checked)
