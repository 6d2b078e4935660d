"""
The relay end to end with real programs: a real C{twistd -n clientid-mail}
child process relays through a private Postfix as its smarthost (STARTTLS
with Postfix's throwaway certificate as C{[relay] ca}), survives C{kill -9}
right after its C{250}, bounces Postfix's 5xx into the sender's INBOX (read
over IMAP with C{imaplib}), and C{clientid-admin queue list|flush|remove}
run as subprocesses.  Postfix's own MTA port has no AUTH (that needs a
Dovecot SASL socket); the relay's AUTH is tested against Twisted's ESMTP
server in C{test_relay_sender}.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import smtplib
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SkipTest, TestCase

import clientid_twisted
from tests.dovecotserver import DovecotServer, requireDovecot
from tests.postfixserver import PostfixServer
from tests.runningserver import PASSWORD, RunningServer, canRunServer, fetchInbox

MESSAGE = (
    b"From: alice@example.test\r\nSubject: through the smarthost\r\n"
    b"Message-ID: <relay-test@example.test>\r\n\r\nHello over Postfix.\r\n"
)


def relayConfig(postfix: PostfixServer, port: int | None = None, login: str = "") -> str:
    return (
        "[relay]\n"
        f'smarthost = "tcp:host=localhost:port={port or postfix.smtpPort}"\n'
        "starttls = true\n"
        f'ca = "{postfix.caFile}"\n'
        + login
    )


def submit(server: RunningServer, recipients: list[str], login: bool = True) -> dict[str, Any]:
    """
    Submit L{MESSAGE} as alice over STARTTLS; the replies.  The session is
    left open after DATA (the caller may kill the server there).
    """
    results: dict[str, Any] = {}
    client = smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=30)
    client.ehlo("laptop.example.net")
    client.starttls(context=server.context)
    client.ehlo("laptop.example.net")
    if login:
        client.login("alice@example.test", PASSWORD)
    results["mail"] = client.mail("alice@example.test")
    results["rcpt"] = [client.rcpt(r)[0] for r in recipients]
    if 250 in results["rcpt"]:
        results["data"] = client.data(MESSAGE)[0]
    results["client"] = client
    return results


def finish(results: dict[str, Any]) -> None:
    try:
        results["client"].quit()
    except (smtplib.SMTPException, OSError):
        results["client"].close()


def inbox(server: RunningServer) -> list[bytes]:
    return fetchInbox(server.ports["imap"], server.context, "alice@example.test", PASSWORD)


def waitUntil(predicate: Any, timeout: float = 30, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met in {timeout} s")
        time.sleep(0.1)


class RelayProcessTests(TestCase):
    timeout = 240

    def setUp(self) -> None:
        reason = canRunServer()
        if reason is not None:
            raise SkipTest(reason)
        self.work = Path(self.mktemp()).resolve()
        self.postfix = PostfixServer()
        self.addCleanup(self.postfix.cleanUp)

    def server(self, config: str) -> RunningServer:
        server = RunningServer(self.work, config, protocols=("smtp", "imap"))
        self.addCleanup(server.stop)
        return server

    def admin(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        root = str(Path(clientid_twisted.__file__).parent.parent)
        return subprocess.run(
            [sys.executable, "-m", "clientid_twisted.admin", "--data-dir", str(self.work / "data")]
            + list(arguments),
            capture_output=True,
            text=True,
            env=dict(os.environ, PYTHONPATH=root),
            timeout=60,
        )

    def test_relayedThroughPostfix(self) -> None:
        """
        Alice's message for another domain goes out through Postfix over
        STARTTLS and lands in the remote mailbox with our C{Received:}
        line; an unknown name in alice's own domain is refused (550).
        """
        self.postfix.start()
        server = self.server(relayConfig(self.postfix))
        results = submit(server, ["bob@test.example", "dave@example.test"])
        finish(results)
        self.assertEqual(results["rcpt"], [250, 550])
        self.assertEqual(results["data"], 250)
        [stored] = self.postfix.waitForMessages("bob", timeout=30)
        self.assertIn(b"by localhost with ESMTPSA", stored)
        self.assertIn(b"Hello over Postfix.", stored)
        # Postfix's summary of the session: EHLO, STARTTLS, EHLO again, one
        # message.
        log = self.postfix.waitForLog("ehlo=2 starttls=1 mail=1 rcpt=1 data=1")
        self.assertIn("from=<alice@example.test>", log)
        waitUntil(lambda: not list((self.work / "data" / "queue").glob("*-D")), what="queue empty")

    def test_relayedWithLogin(self) -> None:
        """
        Through Postfix's submission port: STARTTLS (required there), then
        AUTH as the relay account (checked by Dovecot), then the message;
        Postfix's log names the SASL login.
        """
        requireDovecot()
        self.postfix.cleanUp()
        dovecot = DovecotServer(
            {"relay-user": "smarthost secret"},
            extra="service auth {\n  unix_listener postfix-auth {\n    mode = 0666\n  }\n}\n",
        )
        self.addCleanup(dovecot.cleanUp)
        senders = Path(self.mktemp()).resolve()
        senders.mkdir()
        senders.chmod(0o755)
        (senders / "senders").write_text("alice@example.test relay-user\n")
        (senders / "senders").chmod(0o644)
        self.postfix = PostfixServer(
            saslSocket=str(dovecot.directory / "run" / "postfix-auth"),
            main={"smtpd_sender_login_maps": f"texthash:{senders / 'senders'}"},
        ).start()
        self.addCleanup(self.postfix.cleanUp)
        passwordFile = Path(self.mktemp()).resolve()
        passwordFile.write_text("smarthost secret\n")
        server = self.server(
            relayConfig(
                self.postfix,
                self.postfix.submissionPort,
                f'username = "relay-user"\npassword_file = "{passwordFile}"\n',
            )
        )
        results = submit(server, ["bob@test.example"])
        finish(results)
        self.assertEqual(results["data"], 250)
        [stored] = self.postfix.waitForMessages("bob", timeout=30)
        self.assertIn(b"Hello over Postfix.", stored)
        self.postfix.waitForLog("sasl_username=relay-user")
        # The session's summary, logged when it ends (Postfix logs through
        # postlogd, so it can come a little after the message is stored):
        # STARTTLS, then AUTH.
        self.postfix.waitForLog("starttls=1 auth=1")
        self.assertNotIn("smarthost secret", server.log())

    def test_killedAfterAcknowledgement(self) -> None:
        """
        Killed with SIGKILL right after its 250, with the smarthost down,
        the server keeps both messages on disk; C{clientid-admin queue
        list} shows them, C{queue remove} drops one, C{queue flush} marks
        the rest due, and the restarted server delivers it once Postfix is
        up.
        """
        server = self.server(relayConfig(self.postfix))
        results = submit(server, ["bob@test.example", "alice@test.example"])
        self.assertEqual(results["data"], 250)
        server.process.kill()
        server.wait()
        results["client"].close()

        listed = self.admin("queue", "list", "--json")
        self.assertEqual(listed.returncode, 0, listed.stderr)
        entries = {e["to"]: e for e in json.loads(listed.stdout)}
        self.assertEqual(set(entries), {"bob@test.example", "alice@test.example"})
        self.assertEqual(entries["bob@test.example"]["from"], "alice@example.test")
        table = self.admin("queue", "list")
        self.assertIn(entries["bob@test.example"]["id"], table.stdout)

        removed = self.admin("queue", "remove", entries["alice@test.example"]["id"])
        self.assertEqual(removed.returncode, 0, removed.stderr)
        self.assertIn("no bounce is sent", removed.stdout)
        again = self.admin("queue", "remove", entries["alice@test.example"]["id"])
        self.assertEqual(again.returncode, 2)
        self.assertIn("no message", again.stderr)
        self.assertEqual(self.admin("queue", "remove", "../users.json").returncode, 2)

        self.postfix.start()
        flushed = self.admin("queue", "flush")
        self.assertEqual(flushed.returncode, 0, flushed.stderr)
        self.assertTrue((self.work / "data" / "queue" / "flush").exists())
        restarted = self.server(relayConfig(self.postfix))
        [stored] = self.postfix.waitForMessages("bob", timeout=30)
        self.assertIn(b"Hello over Postfix.", stored)
        waitUntil(
            lambda: self.admin("queue", "list").stdout == "the relay queue is empty\n",
            what="queue empty",
        )
        self.assertEqual(self.postfix.messages("alice"), [])
        self.assertIn("1 message(s) waiting", restarted.log())

    def test_flushReachesRunningServer(self) -> None:
        """
        After a failed attempt the next one is a minute away; C{queue
        flush} makes the running server try at once.
        """
        server = self.server(relayConfig(self.postfix))
        results = submit(server, ["bob@test.example"])
        finish(results)
        self.assertEqual(results["data"], 250)

        def attempted() -> bool:
            entries = json.loads(self.admin("queue", "list", "--json").stdout)
            return bool(entries) and entries[0]["attempts"] == 1

        waitUntil(attempted, what="a failed attempt")
        [entry] = json.loads(self.admin("queue", "list", "--json").stdout)
        self.assertIn("refused", entry["last_error"].lower())
        self.postfix.start()
        started = time.monotonic()
        self.assertEqual(self.admin("queue", "flush").returncode, 0)
        self.postfix.waitForMessages("bob", timeout=30)
        self.assertLess(time.monotonic() - started, 30)
        self.assertIn("relay queue flush requested: 1 message(s) due now", server.log())

    def test_refusedBouncesToInbox(self) -> None:
        """
        Postfix's 550 for an unknown mailbox comes back as an RFC 3464
        report in alice's INBOX, which she reads over IMAP.
        """
        self.postfix.start()
        server = self.server(relayConfig(self.postfix))
        results = submit(server, ["nobody@test.example"])
        finish(results)
        self.assertEqual(results["data"], 250)
        [raw] = waitUntil(lambda: inbox(server), what="bounce in INBOX")
        bounce = email.message_from_bytes(raw, policy=email.policy.default)
        self.assertEqual(bounce.get_content_type(), "multipart/report")
        self.assertEqual(bounce.get_param("report-type"), "delivery-status")
        status = bounce.get_payload()[1].get_payload()[1]
        self.assertEqual(status["Final-Recipient"], "rfc822; nobody@test.example")
        self.assertEqual(status["Action"], "failed")
        self.assertEqual(status["Status"], "5.1.1")
        self.assertEqual(status["Remote-MTA"], "dns; localhost")
        self.assertIn("550 5.1.1", status["Diagnostic-Code"])
        self.assertIn("Subject: through the smarthost", bounce.get_payload()[2].get_payload())

    def test_noRelay(self) -> None:
        """
        Without C{[relay]} a non-local recipient gets 550 as before; with
        it, nothing is accepted before a login.
        """
        self.postfix.start()
        server = self.server("")
        results = submit(server, ["bob@test.example"])
        finish(results)
        self.assertEqual(results["rcpt"], [550])
        server.stop()
        relaying = self.server(relayConfig(self.postfix))
        results = submit(relaying, ["bob@test.example"], login=False)
        finish(results)
        self.assertEqual(results["mail"][0], 530)
        time.sleep(1)
        self.assertEqual(self.postfix.messages("bob"), [])
