"""
Tests for L{clientid_twisted.admin}: the C{clientid-admin} command.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

import clientid_twisted
from clientid_twisted.admin import main
from clientid_twisted.server.users import AliasDatabase, UserDatabase, usersPath, verifyPassword


class AdminTestMixin:
    def setUp(self) -> None:
        self.dataDir = Path(self.mktemp())  # type: ignore[attr-defined]
        self.users = UserDatabase(usersPath(self.dataDir))
        status, _, err = self.admin("init")
        assert status == 0, err

    def admin(self, *arguments: str, stdin: str = "") -> tuple[int, str, str]:
        stdout, stderr = io.StringIO(), io.StringIO()
        status = main(
            ["--data-dir", str(self.dataDir), *arguments],
            stdin=io.StringIO(stdin),
            stdout=stdout,
            stderr=stderr,
        )
        return status, stdout.getvalue(), stderr.getvalue()

    def assertUsageError(self, result: tuple[int, str, str], message: str) -> None:
        status, out, err = result
        self.assertEqual((status, out), (2, ""))  # type: ignore[attr-defined]
        self.assertIn(message, err)  # type: ignore[attr-defined]
        self.assertNotIn("Traceback", err)  # type: ignore[attr-defined]

    def passwordMatches(self, address: str, password: str) -> bool:
        passwordHash = self.users.passwordHash(address)
        return passwordHash is not None and verifyPassword(passwordHash, password)


class UserCommandTests(AdminTestMixin, SynchronousTestCase):
    def test_add(self) -> None:
        status, out, err = self.admin(
            "user", "add", "Alice@Example.org", "--password-stdin", stdin="s3cret pw\n"
        )
        self.assertEqual((status, out, err), (0, "added user alice@example.org\n", ""))
        self.assertTrue(self.passwordMatches("alice@example.org", "s3cret pw"))
        self.assertFalse(self.passwordMatches("alice@example.org", "s3cret pw\n"))

    def test_addCRLF(self) -> None:
        self.admin(
            "user", "add", "alice@example.org", "--password-stdin", stdin="pw\r\nmore\n"
        )
        self.assertTrue(self.passwordMatches("alice@example.org", "pw"))

    def test_addNoTrailingNewline(self) -> None:
        self.admin("user", "add", "alice@example.org", "--password-stdin", stdin="pw")
        self.assertTrue(self.passwordMatches("alice@example.org", "pw"))

    def test_addEmptyPassword(self) -> None:
        for stdin in ["", "\n"]:
            with self.subTest(stdin=stdin):
                self.assertUsageError(
                    self.admin(
                        "user",
                        "add",
                        "alice@example.org",
                        "--password-stdin",
                        stdin=stdin,
                    ),
                    "the password must not be empty",
                )
        self.assertEqual(self.users.listUsers(), [])

    def test_addWithoutPasswordStdin(self) -> None:
        """
        Without a terminal to prompt on, the password must come from stdin.
        """
        self.assertUsageError(
            self.admin("user", "add", "alice@example.org", stdin="pw\n"),
            "--password-stdin",
        )
        self.assertEqual(self.users.listUsers(), [])

    def test_addExisting(self) -> None:
        self.admin(
            "user", "add", "alice@example.org", "--password-stdin", stdin="one\n"
        )
        self.assertUsageError(
            self.admin(
                "user", "add", "ALICE@example.org", "--password-stdin", stdin="two\n"
            ),
            "user alice@example.org already exists",
        )
        self.assertTrue(self.passwordMatches("alice@example.org", "one"))

    def test_addInvalid(self) -> None:
        self.assertUsageError(
            self.admin("user", "add", "alice", "--password-stdin", stdin="pw\n"),
            "invalid address 'alice'",
        )

    def test_list(self) -> None:
        for address in ["carol@example.org", "alice@example.org", "bob@example.org"]:
            self.admin("user", "add", address, "--password-stdin", stdin="pw\n")
        self.assertEqual(
            self.admin("user", "list"),
            (0, "alice@example.org\nbob@example.org\ncarol@example.org\n", ""),
        )

    def test_listEmpty(self) -> None:
        self.assertEqual(self.admin("user", "list"), (0, "", ""))

    def test_remove(self) -> None:
        self.admin("user", "add", "alice@example.org", "--password-stdin", stdin="pw\n")
        self.admin("user", "add", "bob@example.org", "--password-stdin", stdin="pw\n")
        status, out, err = self.admin("user", "remove", "Alice@example.org")
        self.assertEqual((status, err), (0, ""))
        self.assertIn("removed user alice@example.org", out)
        self.assertIn("it had no mailbox", out)
        self.assertEqual(self.users.listUsers(), ["bob@example.org"])

    def test_removeWithMemoryStore(self) -> None:
        """
        With a memory: store (nothing kept on disk) the account and its
        mail still go, and the output says no devices were forgotten.
        """
        self.admin("user", "add", "alice@example.org", "--password-stdin", stdin="pw\n")
        (self.dataDir / "clientid.toml").write_text('[store]\nurl = "memory:"\n')
        status, out, err = self.admin("user", "remove", "alice@example.org")
        self.assertEqual((status, err), (0, ""))
        self.assertIn("no devices forgotten: a memory: store", out)
        self.assertEqual(self.users.listUsers(), [])

    def test_alias(self) -> None:
        """
        C{user alias add|remove|list}: an existing user may send as an
        alias; an account's own address is no one's alias; the
        configuration's aliases are listed too; removing the owner removes
        its aliases.
        """
        for address in ("alice@example.org", "bob@example.org"):
            self.admin("user", "add", address, "--password-stdin", stdin="pw\n")
        (self.dataDir / "clientid.toml").write_text(
            '[users]\naliases = { "info@example.org" = "bob@example.org" }\n'
        )
        status, out, err = self.admin("user", "alias", "add", "Sales@example.org", "alice@example.org")
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(out, "alice@example.org may now send as sales@example.org\n")
        self.assertUsageError(
            self.admin("user", "alias", "add", "bob@example.org", "alice@example.org"),
            "bob@example.org is an account",
        )
        self.assertUsageError(
            self.admin("user", "alias", "add", "x@example.org", "carol@example.org"), "no such user"
        )
        self.assertUsageError(
            self.admin("user", "alias", "add", "info@example.org", "alice@example.org"),
            "already belongs to bob@example.org",
        )
        self.assertEqual(
            self.admin("user", "alias", "list"),
            (0, "info@example.org bob@example.org\nsales@example.org alice@example.org\n", ""),
        )
        self.assertEqual(
            self.admin("user", "alias", "list", "alice@example.org"),
            (0, "sales@example.org alice@example.org\n", ""),
        )
        aliases = AliasDatabase(self.dataDir / "aliases.json")
        self.assertTrue(aliases.owns("alice@example.org", "SALES@example.org"))
        self.assertEqual(self.admin("user", "alias", "remove", "sales@example.org")[0], 0)
        self.assertFalse(aliases.owns("alice@example.org", "sales@example.org"))
        self.assertUsageError(self.admin("user", "alias", "remove", "sales@example.org"), "no such alias")
        self.admin("user", "alias", "add", "sales@example.org", "alice@example.org")
        self.assertEqual(self.admin("user", "remove", "alice@example.org")[0], 0)
        self.assertEqual(aliases.listAliases(), [])

    def test_removeUnknown(self) -> None:
        self.assertUsageError(
            self.admin("user", "remove", "bob@example.org"),
            "no such user: bob@example.org",
        )

    def test_passwd(self) -> None:
        self.admin(
            "user", "add", "alice@example.org", "--password-stdin", stdin="old\n"
        )
        status, out, err = self.admin(
            "user", "passwd", "alice@example.org", "--password-stdin", stdin="new\n"
        )
        self.assertEqual((status, err), (0, ""))
        self.assertTrue(self.passwordMatches("alice@example.org", "new"))
        self.assertFalse(self.passwordMatches("alice@example.org", "old"))

    def test_passwdUnknown(self) -> None:
        self.assertUsageError(
            self.admin(
                "user", "passwd", "bob@example.org", "--password-stdin", stdin="pw\n"
            ),
            "no such user: bob@example.org",
        )
        self.assertEqual(self.users.listUsers(), [])

    def test_passwdEmpty(self) -> None:
        self.admin(
            "user", "add", "alice@example.org", "--password-stdin", stdin="old\n"
        )
        self.assertUsageError(
            self.admin(
                "user", "passwd", "alice@example.org", "--password-stdin", stdin="\n"
            ),
            "must not be empty",
        )
        self.assertTrue(self.passwordMatches("alice@example.org", "old"))

    def test_corruptDatabase(self) -> None:
        """
        Unusable data exits 1 with the file named, and the file is kept.
        """
        self.users.path.write_text("{oops")
        for arguments in [("user", "list"), ("user", "remove", "a@b.example")]:
            with self.subTest(arguments=arguments):
                status, out, err = self.admin(*arguments)
                self.assertEqual((status, out), (1, ""))
                self.assertIn(str(self.users.path), err)
                self.assertNotIn("Traceback", err)
        self.assertEqual(self.users.path.read_text(), "{oops")


class DataDirectoryTests(SynchronousTestCase):
    """
    Only C{init} (or the server's first start) makes a data directory or a
    store; every other command says where it looked and exits 2.
    """

    def setUp(self) -> None:
        self.missing = Path(self.mktemp()).absolute() / "nonexistent"

    def run_(self, *arguments: str, stdin: str = "") -> tuple[int, str, str]:
        stdout, stderr = io.StringIO(), io.StringIO()
        status = main(list(arguments), stdin=io.StringIO(stdin), stdout=stdout, stderr=stderr)
        return status, stdout.getvalue(), stderr.getvalue()

    def test_missingDataDir(self) -> None:
        for command in [
            ("user", "list"),
            ("user", "add", "alice@example.org", "--password-stdin"),
            ("user", "passwd", "alice@example.org", "--password-stdin"),
            ("user", "remove", "alice@example.org"),
            ("devices", "list", "alice@example.org"),
            ("events",),
        ]:
            with self.subTest(command=command):
                status, out, err = self.run_("--data-dir", str(self.missing), *command, stdin="pw\n")
                self.assertEqual((status, out), (2, ""), err)
                self.assertIn(f"no data directory at {self.missing}", err)
                self.assertFalse(self.missing.exists())
                self.assertFalse(self.missing.parent.exists() and any(self.missing.parent.iterdir()))

    def test_defaultDataDirMissing(self) -> None:
        """
        Run from another directory without C{--data-dir}, C{user add} names
        the C{./clientid-data} it looked for and creates nothing there.
        """
        here = Path(self.mktemp()).absolute()
        here.mkdir()
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(here)
        status, _, err = self.run_("user", "add", "alice@example.org", "--password-stdin", stdin="pw\n")
        self.assertEqual(status, 2)
        self.assertIn(str(here / "clientid-data"), err)
        self.assertEqual(list(here.iterdir()), [])

    def test_missingStoreDirectory(self) -> None:
        url = f"sqlite://{self.missing}/dir/x.sqlite3"
        status, _, err = self.run_("--store", url, "events")
        self.assertEqual(status, 2, err)
        self.assertIn(f"{self.missing}/dir/x.sqlite3", err)
        self.assertFalse(self.missing.exists())

    def test_init(self) -> None:
        status, out, err = self.run_("--data-dir", str(self.missing), "init")
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(out, f"initialised {self.missing}\n")
        self.assertEqual(self.missing.stat().st_mode & 0o777, 0o700)
        self.assertTrue((self.missing / "clientid.sqlite3").exists())
        self.assertTrue((self.missing / "clientid.key").exists())
        status, out, err = self.run_(
            "--data-dir", str(self.missing), "user", "add", "alice@example.org", "--password-stdin", stdin="pw\n"
        )
        self.assertEqual((status, err), (0, ""))


class ConfigValidationTests(AdminTestMixin, SynchronousTestCase):
    """
    C{clientid-admin} refuses the configuration files the server refuses,
    with the same message, for every command.
    """

    def test_sameErrorAsServer(self) -> None:
        from clientid_twisted.server.tap import Options, makeService

        for text, named in [
            ("[server]\nmax_conections = 5\n", "[server] max_conections"),
            ("[limit]\nlockout_seconds = 1\n", "unknown table [limit]"),
            ("[policy]\ndevices = \"tofu\"\nlokout = 1\n", "'lokout'"),
        ]:
            with self.subTest(config=text):
                configFile = self.dataDir / "clientid.toml"
                configFile.write_text(text)
                options = Options()
                options.parseOptions(["--data-dir", str(self.dataDir), "--smtp", "tcp:0"])
                serverError = str(self.assertRaises(SystemExit, makeService, options))
                self.assertIn(named, serverError)
                self.assertIn(str(configFile), serverError)
                for command in [("user", "list"), ("events",)]:
                    status, out, err = self.admin(*command)
                    self.assertEqual((status, out), (2, ""))
                    self.assertEqual(err, serverError.replace("clientid-mail:", "clientid-admin: error:") + "\n")


class ArgumentTests(AdminTestMixin, SynchronousTestCase):
    def test_noCommand(self) -> None:
        self.assertUsageError(self.admin(), "usage: clientid-admin")

    def test_unknownCommand(self) -> None:
        self.assertUsageError(self.admin("frobnicate"), "invalid choice")

    def test_noAction(self) -> None:
        self.assertUsageError(self.admin("user"), "usage: clientid-admin")

    def test_missingAddress(self) -> None:
        self.assertUsageError(self.admin("user", "remove"), "ADDRESS")

    def test_help(self) -> None:
        status, out, err = self.admin("--help")
        self.assertEqual((status, err), (0, ""))
        self.assertIn("--data-dir", out)
        self.assertIn("Exit status", out)

    def test_defaultDataDir(self) -> None:
        """
        Without C{--data-dir}, the data directory is C{./clientid-data}.
        """
        here = Path(self.mktemp()).absolute()
        here.mkdir()
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(here)
        self.assertEqual(main(["init"], stdout=io.StringIO(), stderr=io.StringIO()), 0)
        status = main(
            ["user", "add", "alice@example.org", "--password-stdin"],
            stdin=io.StringIO("pw\n"),
            stdout=io.StringIO(),
            stderr=io.StringIO(),
        )
        self.assertEqual(status, 0)
        self.assertEqual(
            UserDatabase(here / "clientid-data" / "users.json").listUsers(),
            ["alice@example.org"],
        )


class ScriptTests(SynchronousTestCase):
    """
    C{python -m clientid_twisted.admin} runs the command.
    """

    def test_subprocess(self) -> None:
        dataDir = Path(self.mktemp()).absolute()
        root = str(Path(clientid_twisted.__file__).parent.parent)
        environment = dict(os.environ, PYTHONPATH=root)

        def admin(*arguments: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "clientid_twisted.admin",
                    "--data-dir",
                    str(dataDir),
                ]
                + list(arguments),
                input=stdin,
                capture_output=True,
                text=True,
                env=environment,
                timeout=60,
            )

        initialised = admin("init")
        self.assertEqual((initialised.returncode, initialised.stderr), (0, ""))
        added = admin(
            "user", "add", "alice@example.org", "--password-stdin", stdin="pw\n"
        )
        self.assertEqual((added.returncode, added.stderr), (0, ""))
        listed = admin("user", "list")
        self.assertEqual((listed.returncode, listed.stdout), (0, "alice@example.org\n"))
        refused = admin("user", "remove", "bob@example.org")
        self.assertEqual(refused.returncode, 2)
        self.assertEqual(
            refused.stderr, "clientid-admin: error: no such user: bob@example.org\n"
        )
