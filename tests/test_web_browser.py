"""
Self-service in a real browser: Debian's Chromium driven by Selenium
against a real C{twistd clientid-mail} in C{allowlist} mode, with the
notices read over real IMAP.

Outside CI, a missing Chromium, chromedriver or Selenium skips these tests
with the command that installs them; with C{CI} set it fails them.  With
C{CLIENTID_SCREENSHOTS=DIR} set, the screenshots of the confirmation page
and the device page are written there (C{docs/images} holds the ones
made this way).
"""

from __future__ import annotations

import email
import imaplib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.runningserver import PASSWORD, RunningServer, canRunServer
from tests.test_imap_server import registerIMAPLibCommand
from tests.services import freePort, requireProgram

ALICE = "alice@example.test"
LAPTOP = "5b0e0c1e-laptop-token-9f1d-7a44c0de"
PHONE = "1c2d3e4f-phone-token-8a7b-6c5d4e3f"
STRANGER = "9a8b7c6d-stranger-token-5e4f-3a2b1c0d"

CONFIG = """\
[policy]
devices = "allowlist"

[server]
auth_failure_delay_seconds = 0
"""


def _webdriver(temporary: Path) -> Any:
    """
    A Selenium driver of a headless Chromium whose temporary files (it
    leaves a C{org.chromium.Chromium.*} directory behind even after
    C{quit}) go into C{temporary}, for the caller to remove.
    """
    chromium = requireProgram("chromium", "chromium", "self-service browser")
    driver = requireProgram("chromedriver", "chromium-driver", "self-service browser")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        if os.environ.get("CI"):
            raise AssertionError("selenium is not installed, and CI is set (pip install selenium)")
        raise SkipTest("selenium is not installed (pip install selenium); the browser tests are skipped")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=412,915"]:
        options.add_argument(argument)
    # The server's certificate is one the test made; the browser is told to
    # accept it rather than have its trust store changed.
    options.accept_insecure_certs = True
    service = Service(driver, env=dict(os.environ, TMPDIR=str(temporary)))
    return webdriver.Chrome(options=options, service=service)


def _login(server: RunningServer, token: str) -> tuple[str, imaplib.IMAP4_SSL]:
    connection = imaplib.IMAP4_SSL("127.0.0.1", server.ports["imaps"], ssl_context=server.context, timeout=20)
    assert connection._simple_command("CLIENTID", "UUID", token)[0] == "OK"
    status, _ = connection._simple_command("LOGIN", ALICE, connection._quote(PASSWORD))
    if status == "OK":
        connection.state = "AUTH"
    return status, connection


def _canLogIn(server: RunningServer, token: str) -> bool:
    status, connection = _login(server, token)
    connection.logout()
    return status == "OK"


def _links(server: RunningServer, subject: str) -> list[str]:
    """
    The links in the newest INBOX message whose subject contains
    C{subject}, read over IMAP from the approved laptop.
    """
    status, connection = _login(server, LAPTOP)
    assert status == "OK", status
    try:
        connection.select("INBOX")
        _, found = connection.search(None, "SUBJECT", f'"{subject}"')
        numbers = found[0].split()
        assert numbers, f"no notice with subject {subject!r}"
        _, data = connection.fetch(numbers[-1], "(RFC822)")
        message = email.message_from_bytes(data[0][1])
        body = message.get_payload(decode=True).decode("ascii")
        return re.findall(r"https://\S+", body)
    finally:
        connection.logout()


class SelfServiceBrowserTests(SynchronousTestCase):
    def setUp(self) -> None:
        reason = canRunServer()
        if reason is not None:
            raise SkipTest(reason)
        registerIMAPLibCommand(self, "CLIENTID")
        # Short, under the system's temporary directory: Chromium puts a
        # Unix socket in it.
        temporary = Path(tempfile.mkdtemp(prefix="clientid-chromium-"))
        self.addCleanup(shutil.rmtree, temporary, ignore_errors=True)
        self.browser = _webdriver(temporary)
        self.addCleanup(self.browser.quit)
        self.webPort = freePort()
        work = Path(self.mktemp())
        self.server = RunningServer(
            work,
            CONFIG + f'\n[web]\nbase_url = "https://localhost:{self.webPort}"\n',
            protocols=("imaps",),
            arguments=("--web", f"tcp:{self.webPort}:interface=127.0.0.1"),
        )
        self.addCleanup(self.server.stop)
        self.admin("devices", "approve", ALICE, "UUID", LAPTOP)
        self.screenshots = os.environ.get("CLIENTID_SCREENSHOTS")

    def admin(self, *arguments: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "clientid_twisted.admin", "--data-dir", str(self.server.dataDir), *arguments],
            capture_output=True, text=True, timeout=60,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        return result.stdout

    def shot(self, name: str) -> None:
        if self.screenshots:
            Path(self.screenshots).mkdir(parents=True, exist_ok=True)
            self.browser.save_screenshot(str(Path(self.screenshots) / name))

    def click(self, text: str) -> None:
        from selenium.webdriver.common.by import By

        self.browser.find_element(By.XPATH, f'//button[normalize-space()="{text}"]').click()

    def waitFor(self, text: str) -> None:
        """
        Wait until the page (after a click's navigation) shows C{text}.
        """
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(self.browser, 20).until(lambda b: text in b.page_source)

    def heading(self) -> str:
        from selenium.webdriver.common.by import By

        return str(self.browser.find_element(By.TAG_NAME, "h1").text)

    def test_approveFromTheNotice(self) -> None:
        """
        A new device is refused, the notice in the INBOX carries an Approve
        link, the browser confirms it, and the device logs in; the link
        opened again changes nothing.
        """
        self.assertFalse(_canLogIn(self.server, PHONE))
        approve, disown = _links(self.server, "refused device")
        self.assertIn("/link/approve?t=", approve)
        self.assertIn("/link/disown?t=", disown)
        self.browser.get(approve)
        self.assertEqual(self.heading(), "Approve this device?")
        self.shot("selfservice-confirm.png")
        self.assertFalse(_canLogIn(self.server, PHONE), "opening the link must change nothing")
        self.click("Approve this device")
        self.waitFor("Device approved")
        self.assertTrue(_canLogIn(self.server, PHONE))
        self.browser.get(approve)
        self.assertEqual(self.heading(), "Link not valid")
        self.assertIn("already been used", self.browser.page_source)

    def test_thisWasntMe(self) -> None:
        self.assertFalse(_canLogIn(self.server, STRANGER))
        approve, disown = _links(self.server, "refused device")
        self.browser.get(disown)
        self.click("Revoke this device")
        self.waitFor("Device revoked")
        self.assertIn("change it now", self.browser.page_source)
        self.assertIn("revoked", self.admin("devices", "list", ALICE))
        self.browser.get(approve)
        self.assertEqual(self.heading(), "Link not valid")
        self.assertFalse(_canLogIn(self.server, STRANGER))

    def test_devicePage(self) -> None:
        """
        Sign in by the mailed link, name a device, approve and then revoke
        it (refused at once), sign out.
        """
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys

        self.assertFalse(_canLogIn(self.server, PHONE))
        self.browser.get(f"https://localhost:{self.webPort}/devices")
        self.browser.find_element(By.ID, "address").send_keys(ALICE)
        self.click("Mail me a sign-in link")
        self.waitFor("sign-in link is on its way")
        [signIn] = _links(self.server, "Sign-in link")
        self.browser.get(signIn)
        self.click("Sign in")
        self.waitFor("Signed in as")
        self.assertEqual(self.heading(), "Your mail devices")
        self.assertIn(f"Signed in as {ALICE}", self.browser.find_element(By.TAG_NAME, "main").text)
        page = self.browser.page_source
        self.assertNotIn(PHONE, page)
        self.assertNotIn(LAPTOP, page)
        phone = self.fingerprintOf(PHONE)
        # Rename the phone with the keyboard: type into its labelled name
        # field and press Enter.
        field = self.browser.find_element(
            By.XPATH,
            f'//form[input[@name="action" and @value="rename"] and input[@name="fingerprint" and @value="{phone}"]]'
            '//input[@name="name"]',
        )
        label = self.browser.find_element(By.CSS_SELECTOR, f'label[for="{field.get_attribute("id")}"]')
        self.assertIn(f"Name for UUID {phone}", label.get_attribute("textContent"))
        field.send_keys("Anna's phone", Keys.RETURN)
        self.waitFor("renamed to")
        status = self.browser.find_element(By.CSS_SELECTOR, 'p[role="status"]').text
        self.assertEqual(status, f"Device UUID {phone} renamed to \u201cAnna's phone\u201d.")
        self.assertIn("Anna's phone", self.browser.find_element(By.TAG_NAME, "table").text)
        named = f"Anna's phone (UUID {phone})"
        # The same store as the operator's: the name is in devices list.
        self.assertIn("Anna's phone", self.admin("devices", "list", ALICE))
        self.shot("selfservice-devices.png")
        self.browser.find_element(By.XPATH, f'//button[@aria-label="Approve {named}"]').click()
        self.waitFor(f"Device UUID {phone} approved")
        self.assertTrue(_canLogIn(self.server, PHONE))
        self.browser.find_element(By.XPATH, f'//button[@aria-label="Revoke {named}"]').click()
        self.waitFor(f"Device UUID {phone} revoked")
        self.assertFalse(_canLogIn(self.server, PHONE))
        self.click("Sign out")
        self.waitFor("You are signed out")
        self.browser.get(f"https://localhost:{self.webPort}/devices")
        self.assertIn("Mail me a sign-in link", self.browser.page_source)
        events = self.admin("events", "--account", ALICE)
        for kind in ["web-sign-in", "device-renamed", "device-approved", "device-revoked", "web-sign-out"]:
            self.assertIn(kind, events)

    def fingerprintOf(self, token: str) -> str:
        """
        The fingerprint the server shows for C{token}, under its own key.
        """
        from clientid_twisted._fingerprint import IdentityHasher
        from clientid_twisted._identity import ClientIdentity
        from clientid_twisted._keyfile import loadOrCreateKey

        hasher = IdentityHasher(loadOrCreateKey(self.server.dataDir / "clientid.key"))
        return hasher.fingerprint(ClientIdentity("UUID", token))
