"""
Tests for L{clientid_twisted.server.config}: reading C{clientid.toml}.
"""

from __future__ import annotations

from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from clientid_twisted.server.config import (
    CONFIG_TABLES,
    ConfigError,
    checkConfig,
    configPath,
    getTable,
    loadConfig,
)


class LoadConfigTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = Path(self.mktemp())
        self.directory.mkdir()
        self.path = configPath(self.directory)

    def test_path(self) -> None:
        self.assertEqual(configPath(Path("/data")), Path("/data/clientid.toml"))

    def test_none(self) -> None:
        self.assertEqual(loadConfig(None), {})
        self.assertEqual(loadConfig(None, required=False), {})

    def test_missingDefault(self) -> None:
        """
        The default file is optional.
        """
        self.assertEqual(loadConfig(self.path, required=False), {})

    def test_missingExplicit(self) -> None:
        """
        A file the operator named must exist.
        """
        e = self.assertRaises(ConfigError, loadConfig, self.path, required=True)
        self.assertIn(str(self.path), str(e))
        self.assertIn("not found", str(e))
        self.assertIsInstance(e, ValueError)

    def test_valid(self) -> None:
        self.path.write_text(
            'hostname = "mx.example.net"\n'
            '[policy]\nmode = "learn"\n'
            "[limits]\nfailures = 5\n"
        )
        self.assertEqual(
            loadConfig(self.path, required=True),
            {
                "hostname": "mx.example.net",
                "policy": {"mode": "learn"},
                "limits": {"failures": 5},
            },
        )

    def test_syntaxError(self) -> None:
        """
        The message names the file and the line.
        """
        self.path.write_text('[server]\nhostname = "a"\nport = \n')
        for required in [True, False]:
            with self.subTest(required=required):
                e = self.assertRaises(ConfigError, loadConfig, self.path, required)
                self.assertIn(str(self.path), str(e))
                self.assertIn("line 3", str(e))

    def test_duplicateKey(self) -> None:
        self.path.write_text("[policy]\nmode = 1\nmode = 2\n")
        e = self.assertRaises(ConfigError, loadConfig, self.path, True)
        self.assertIn("line 3", str(e))

    def test_notUTF8(self) -> None:
        self.path.write_bytes(b'a = "x"\nb = "\xff"\n')
        e = self.assertRaises(ConfigError, loadConfig, self.path, True)
        self.assertIn(str(self.path), str(e))
        self.assertIn("not UTF-8 (at line 2)", str(e))

    def test_unreadable(self) -> None:
        e = self.assertRaises(ConfigError, loadConfig, self.directory, False)
        self.assertIn(str(self.directory), str(e))


class GetTableTests(SynchronousTestCase):
    def test_absent(self) -> None:
        self.assertEqual(getTable({}, "policy"), {})

    def test_table(self) -> None:
        self.assertEqual(
            getTable({"policy": {"mode": "tofu"}}, "policy"), {"mode": "tofu"}
        )

    def test_notATable(self) -> None:
        for value, kind in [
            ("x", "a string"),
            (3, "an integer"),
            ([1], "an array"),
            (True, "a boolean"),
        ]:
            with self.subTest(value=value):
                e = self.assertRaises(
                    ConfigError,
                    getTable,
                    {"policy": value},
                    "policy",
                    Path("/d/clientid.toml"),
                )
                self.assertEqual(
                    str(e),
                    "/d/clientid.toml: 'policy' must be a table ([policy]), "
                    f"not {kind}",
                )


class CheckConfigTests(SynchronousTestCase):
    """
    L{checkConfig}: the one validator of a whole file, for the server and
    C{clientid-admin} alike.
    """

    source = Path("/d/clientid.toml")

    def test_unknownTable(self) -> None:
        """
        A misspelt table (C{[limit]} for C{[limits]}) is an error naming
        the file and the table, not silently ignored.
        """
        e = self.assertRaises(ConfigError, checkConfig, {"limit": {"lockout_seconds": 1}}, self.source)
        self.assertTrue(str(e).startswith("/d/clientid.toml: unknown table [limit] (known tables: "), str(e))
        self.assertIn("[limits]", str(e))

    def test_unknownTopLevelKey(self) -> None:
        e = self.assertRaises(ConfigError, checkConfig, {"hostname": "mx.example.net"}, self.source)
        self.assertTrue(str(e).startswith("/d/clientid.toml: unknown key 'hostname'"), str(e))

    def test_unknownKeyInEveryTable(self) -> None:
        """
        Each registered table's checker runs: an unknown key in any of them
        is an error naming the file, the table and the key.
        """
        for table in CONFIG_TABLES:
            with self.subTest(table=table):
                config = {table: {"no_such_key": 1}}
                if table == "types":
                    config = {"types": {"UUID": {"no_such_key": 1}}}
                if table == "relay":
                    config = {"relay": {"smarthost": "tcp:host=127.0.0.1:port=25", "no_such_key": 1}}
                e = self.assertRaises(ConfigError, checkConfig, config, self.source)
                self.assertIn("/d/clientid.toml", str(e))
                self.assertIn("no_such_key", str(e))

    def test_tablesOwned(self) -> None:
        """
        Every table belongs to the policy (the library, which the cred
        plugin checks) or to an application, named in
        L{APPLICATION_TABLES} so the cred plugin can leave it alone.
        """
        from clientid_twisted.policy._config import APPLICATION_TABLES, POLICY_TABLES

        self.assertEqual(set(CONFIG_TABLES), set(POLICY_TABLES) | APPLICATION_TABLES)
        self.assertFalse(set(POLICY_TABLES) & APPLICATION_TABLES)

    def test_valid(self) -> None:
        checkConfig(
            {
                "server": {"hostname": "mx.example.net", "max_connections": 10},
                "policy": {"devices": "learn"},
                "limits": {"lockout_seconds": 60},
            },
            self.source,
        )
        checkConfig({}, self.source)
