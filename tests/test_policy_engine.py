"""
Tests for L{clientid_twisted.policy._engine.DevicePolicy}: one test (or a
few) per rule, through the real checker and memory store on a L{Clock}.
"""

from __future__ import annotations

from typing import Any

from zope.interface.verify import verifyObject

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from clientid_twisted._identity import ClientIdentity
from clientid_twisted.interfaces import IClientIDPolicy
from clientid_twisted.policy import _keys as keys
from clientid_twisted.policy._decision import Attempt, Verdict
from clientid_twisted.policy._engine import DevicePolicy
from clientid_twisted.policy._health import RECOVERY_SECONDS
from clientid_twisted.store._errors import StoreError
from clientid_twisted.store._records import APPROVED, PENDING, REVOKED
from tests.policyharness import ALICE, BOB, START, PolicyHarness


def allowlist(**policy: Any) -> dict[str, Any]:
    return {"policy": {"devices": "allowlist", **policy}}


class InterfaceTests(SynchronousTestCase):
    def test_interface(self) -> None:
        harness = PolicyHarness(self)
        self.assertTrue(verifyObject(IClientIDPolicy, harness.policy))

    def test_noHasherYet(self) -> None:
        """
        Until the store's key is known, decisions are temporary failures.
        """
        harness = PolicyHarness(self)
        harness.policy.hasher = None
        self.assertEqual(harness.login(), "tempfail")


class PasswordTests(SynchronousTestCase):
    def test_rightAndWrong(self) -> None:
        harness = PolicyHarness(self)
        self.assertEqual(harness.login(), "ok")
        self.assertEqual(harness.login(password="wrong"), "refused")
        self.assertEqual(harness.login(token=None), "ok")
        self.assertEqual(harness.login(token=None, password="wrong"), "refused")


class RequireClientIDTests(SynchronousTestCase):
    def test_required(self) -> None:
        harness = PolicyHarness(self, {"policy": {"require_clientid": True}})
        self.assertEqual(harness.login(token=None), "refused")
        self.assertEqual(harness.login(), "ok")

    def test_notRequiredByDefault(self) -> None:
        self.assertEqual(PolicyHarness(self).login(token=None), "ok")

    def test_refusalStillChecksPassword(self) -> None:
        """
        A refusal known before the password check still runs it, so it
        takes as long as a wrong password.
        """
        harness = PolicyHarness(self, {"policy": {"require_clientid": True}})
        harness.login(token=None)
        self.assertEqual(harness.inner.calls, 1)


class TypeListTests(SynchronousTestCase):
    def test_allowedTypes(self) -> None:
        harness = PolicyHarness(self, {"policy": {"allowed_types": ["uuid"]}})
        self.assertEqual(harness.login(typeName="UUID"), "ok")
        self.assertEqual(harness.login(typeName="Uuid"), "ok")
        self.assertEqual(harness.login(typeName="LICENSE"), "refused")
        self.assertEqual(harness.login(token=None), "ok")

    def test_deniedTypes(self) -> None:
        harness = PolicyHarness(self, {"policy": {"denied_types": ["License"]}})
        self.assertEqual(harness.login(typeName="LICENSE"), "refused")
        self.assertEqual(harness.login(typeName="license"), "refused")
        self.assertEqual(harness.login(typeName="UUID"), "ok")


class HandlingTests(SynchronousTestCase):
    def test_ignoreIsNotPresented(self) -> None:
        harness = PolicyHarness(
            self,
            {"policy": {"require_clientid": True}, "types": {"UUID": {"handling": ["ignore"]}}},
        )
        self.assertEqual(harness.login(), "refused")
        [refusal] = harness.refusals()
        self.assertIsNone(refusal["clientIDFingerprint"])
        self.assertEqual(harness.login(typeName="OTHER"), "ok")

    def test_ignoreKeepsNothing(self) -> None:
        harness = PolicyHarness(self, {"types": {"uuid": {"handling": ["ignore"]}}})
        self.assertEqual(harness.login(), "ok")
        self.assertEqual(harness.devices(), {})
        self.assertEqual(harness.observer.alerts, [])

    def test_debugIsNotPresentedButLogged(self) -> None:
        harness = PolicyHarness(
            self,
            {"policy": {"require_clientid": True}, "types": {"UUID": {"handling": ["debug"]}}},
        )
        self.assertEqual(harness.login(), "refused")
        [refusal] = harness.refusals()
        self.assertEqual(refusal["clientIDFingerprint"], harness.fingerprint())
        self.assertTrue(refusal["clientIDDebug"])
        self.assertEqual(harness.devices(), {})

    def test_withoutAuthDecidedAsWithoutCLIENTID(self) -> None:
        harness = PolicyHarness(
            self,
            {"policy": {"devices": "allowlist"}, "types": {"UUID": {"handling": ["system-log"]}}},
        )
        self.assertEqual(harness.login(), "refused")
        self.assertIn("needs one", harness.refusals()[0]["reason"])

    def test_withoutAuthNoDevice(self) -> None:
        harness = PolicyHarness(self, {"types": {"UUID": {"handling": ["system-log"]}}})
        self.assertEqual(harness.login(), "ok")
        self.assertEqual(harness.devices(), {})

    def test_withoutAuthCountsByAddress(self) -> None:
        harness = PolicyHarness(
            self,
            {"types": {"UUID": {"handling": ["system-log"]}}, "limits": {"address_failures": 2}},
        )
        harness.login(password="wrong")
        harness.login(password="wrong")
        self.assertEqual(harness.login(), "refused")

    def test_systemLog(self) -> None:
        harness = PolicyHarness(self, allowlist())
        harness.login()
        self.assertEqual(harness.refusals()[0]["clientIDFingerprint"], harness.fingerprint())
        self.assertEqual(harness.refusals()[0]["clientIDType"], "UUID")

    def test_noSystemLog(self) -> None:
        harness = PolicyHarness(self, {**allowlist(), "types": {"UUID": {"handling": ["auth"]}}})
        harness.login()
        [refusal] = harness.refusals()
        self.assertIsNone(refusal["clientIDFingerprint"])
        self.assertIsNone(refusal["clientIDType"])

    def test_userLog(self) -> None:
        harness = PolicyHarness(
            self, {"types": {"UUID": {"handling": ["auth", "user-log"]}}}
        )
        harness.login()
        harness.login(password="wrong")
        self.assertEqual(harness.events(ALICE), ["device-new", "login", "login-failed"])

    def test_noUserLogByDefault(self) -> None:
        harness = PolicyHarness(self)
        harness.login()
        harness.login(password="wrong")
        self.assertEqual(harness.events(ALICE), ["device-new"])

    def test_alertFailure(self) -> None:
        harness = PolicyHarness(self, allowlist())
        harness.login()
        self.assertEqual(harness.observer.kinds(), ["device-refused"])

    def test_noAlertFailure(self) -> None:
        harness = PolicyHarness(
            self, {**allowlist(), "types": {"UUID": {"handling": ["auth", "system-log"]}}}
        )
        harness.login()
        self.assertEqual(harness.observer.kinds(), [])

    def test_alertSuccess(self) -> None:
        harness = PolicyHarness(
            self, {"types": {"UUID": {"handling": ["auth", "alert-success"]}}}
        )
        harness.login()
        harness.login()
        self.assertEqual(harness.observer.kinds(), ["device-new", "login", "login"])

    def test_noAlertSuccessByDefault(self) -> None:
        harness = PolicyHarness(self)
        harness.login()
        harness.login()
        self.assertEqual(harness.observer.kinds(), ["device-new"])

    def test_unusualTypeWorksOutOfTheBox(self) -> None:
        """
        A type without a table (the drafts: do not reject an unidentified
        type) gets system-log, auth and alert-failure.
        """
        harness = PolicyHarness(self)
        self.assertEqual(harness.login(typeName="TBIRD-UUID"), "ok")
        self.assertEqual(
            harness.devices(), {harness.fingerprint(typeName="TBIRD-UUID"): APPROVED}
        )


class OffModeTests(SynchronousTestCase):
    def test_noDevices(self) -> None:
        harness = PolicyHarness(self, {"policy": {"devices": "off"}})
        self.assertEqual(harness.login(), "ok")
        self.assertEqual(harness.devices(), {})
        self.assertEqual(harness.observer.alerts, [])

    def test_noAccountClosure(self) -> None:
        """
        Every device is unknown without device tracking: failures from
        many of them must not close the account to all of them.
        """
        harness = PolicyHarness(
            self, {"policy": {"devices": "off"}, "limits": {"unknown_device_failures": 2}}
        )
        harness.login(token="random-1", password="wrong")
        harness.login(token="random-2", password="wrong")
        self.assertEqual(harness.login(token="mine"), "ok")

    def test_limitsStillApply(self) -> None:
        harness = PolicyHarness(self, {"policy": {"devices": "off"}, "limits": {"device_failures": 2}})
        harness.login(password="wrong")
        harness.login(password="wrong")
        self.assertEqual(harness.login(), "refused")


class LearnModeTests(SynchronousTestCase):
    def test_newDeviceLearnedAndAlerted(self) -> None:
        harness = PolicyHarness(self)
        self.assertEqual(harness.login(), "ok")
        self.assertEqual(harness.devices(), {harness.fingerprint(): APPROVED})
        [alert] = harness.observer.alerts
        self.assertEqual(
            (alert.kind, alert.account, alert.typeName, alert.fingerprint, alert.address),
            ("device-new", ALICE, "UUID", harness.fingerprint(), "192.0.2.1"),
        )
        self.assertEqual(alert.time, START)
        self.assertEqual(harness.login(), "ok")
        self.assertEqual(len(harness.observer.alerts), 1)

    def test_anyDeviceMayLogIn(self) -> None:
        harness = PolicyHarness(self)
        for n in range(5):
            self.assertEqual(harness.login(token=f"token-{n}"), "ok")
        self.assertEqual(len(harness.devices()), 5)

    def test_wrongPasswordFromUnknownDeviceNotKept(self) -> None:
        harness = PolicyHarness(self)
        harness.login(password="wrong")
        self.assertEqual(harness.devices(), {})

    def test_newDeviceAlertsSwitchedOff(self) -> None:
        harness = PolicyHarness(self, {"alerts": {"new_device": False}})
        harness.login()
        self.assertEqual(harness.observer.alerts, [])

    def test_pendingDeviceLearned(self) -> None:
        """
        A device refused while under attack is learned once it logs in
        again in calm times.
        """
        harness = PolicyHarness(self, {"policy": {"under_attack": True}})
        self.assertEqual(harness.login(), "refused")
        self.assertEqual(harness.devices(), {harness.fingerprint(): PENDING})
        harness.policy = harness.checker.policy = DevicePolicy(
            harness.policy.config.__class__(), harness.store, harness.hasher,
            [harness.observer], harness.clock,
        )
        self.assertEqual(harness.login(), "ok")
        self.assertEqual(harness.devices(), {harness.fingerprint(): APPROVED})
        self.assertEqual(harness.observer.kinds(), ["device-refused", "device-new"])

    def test_loginWithoutCLIENTIDAlertedWhenAccountUsesDevices(self) -> None:
        harness = PolicyHarness(self)
        harness.login(token=None)
        self.assertEqual(harness.observer.kinds(), [])
        harness.login()
        harness.login(token=None)
        self.assertEqual(harness.observer.kinds(), ["device-new", "no-clientid-login"])
        harness.login(token=None)
        self.assertEqual(len(harness.observer.alerts), 2)


class TofuModeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.harness = PolicyHarness(
            self, {"policy": {"devices": "tofu", "tofu_max_devices": 2}}
        )

    def test_firstDevicesTrusted(self) -> None:
        h = self.harness
        self.assertEqual(h.login(token="one"), "ok")
        self.assertEqual(h.login(token="two"), "ok")
        self.assertEqual(
            h.devices(), {h.fingerprint("one"): APPROVED, h.fingerprint("two"): APPROVED}
        )
        self.assertEqual(h.observer.kinds(), ["device-new", "device-new"])

    def test_laterDevicesRefusedAndPending(self) -> None:
        h = self.harness
        h.login(token="one")
        h.login(token="two")
        self.assertEqual(h.login(token="three"), "refused")
        self.assertEqual(h.devices()[h.fingerprint("three")], PENDING)
        self.assertEqual(h.observer.kinds()[-1], "device-refused")
        self.assertEqual(h.observer.alerts[-1].fingerprint, h.fingerprint("three"))
        self.assertEqual(h.login(token="one"), "ok")

    def test_pendingApprovedByOperator(self) -> None:
        h = self.harness
        h.login(token="one")
        h.login(token="two")
        h.login(token="three")
        self.successResultOf(
            h.store.setDeviceState(ALICE, h.digest("three"), "UUID", h.fingerprint("three"), APPROVED, None)
        )
        self.assertEqual(h.login(token="three"), "ok")

    def test_perAccount(self) -> None:
        h = self.harness
        h.login(token="one")
        h.login(token="two")
        self.assertEqual(h.login(account=BOB, token="three"), "ok")

    def test_wrongPasswordDoesNotUseASlot(self) -> None:
        h = self.harness
        h.login(token="attacker", password="wrong")
        h.login(token="one")
        self.assertEqual(h.login(token="two"), "ok")

    def test_noCLIENTIDRefused(self) -> None:
        self.assertEqual(self.harness.login(token=None), "refused")

    def test_refusedAlertNotRepeated(self) -> None:
        h = self.harness
        h.login(token="one")
        h.login(token="two")
        h.login(token="three")
        h.login(token="three")
        self.assertEqual(h.observer.kinds().count("device-refused"), 1)
        h.clock.advance(86400)
        h.login(token="three")
        self.assertEqual(h.observer.kinds().count("device-refused"), 2)


class AllowlistModeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.harness = PolicyHarness(self, allowlist())

    def approve(self, token: str = "token-A", account: str = ALICE) -> None:
        h = self.harness
        self.successResultOf(
            h.store.setDeviceState(account, h.digest(token), "UUID", h.fingerprint(token), APPROVED, None)
        )

    def test_unknownRefusedAndPending(self) -> None:
        h = self.harness
        self.assertEqual(h.login(), "refused")
        self.assertEqual(h.devices(), {h.fingerprint(): PENDING})
        self.assertEqual(h.observer.kinds(), ["device-refused"])
        self.assertEqual(h.observer.alerts[0].detail, "device not approved")

    def test_wrongPasswordFromUnknownDeviceNotKept(self) -> None:
        h = self.harness
        h.login(password="wrong")
        self.assertEqual(h.devices(), {})
        self.assertEqual(h.observer.alerts, [])

    def test_approved(self) -> None:
        self.approve()
        self.assertEqual(self.harness.login(), "ok")
        self.assertEqual(self.harness.login(password="wrong"), "refused")

    def test_approvalIsPerAccount(self) -> None:
        self.approve()
        self.assertEqual(self.harness.login(account=BOB), "refused")

    def test_noCLIENTIDRefused(self) -> None:
        self.assertEqual(self.harness.login(token=None), "refused")

    def test_revokedDevice(self) -> None:
        h = self.harness
        self.approve()
        self.successResultOf(
            h.store.setDeviceState(ALICE, h.digest(), "UUID", h.fingerprint(), REVOKED, None)
        )
        self.assertEqual(h.login(), "refused")
        self.assertEqual(h.observer.alerts[-1].detail, "device revoked for this account")


class RevocationTests(SynchronousTestCase):
    def test_revokedTokenOnEveryAccount(self) -> None:
        h = PolicyHarness(self)
        h.login()
        self.successResultOf(h.store.setLock(keys.tokenRevoked(h.digest()), None, None))
        self.assertEqual(h.login(), "refused")
        self.assertEqual(h.login(account=BOB), "refused")
        self.assertEqual(h.login(token="other"), "ok")

    def test_revokedForAWhile(self) -> None:
        h = PolicyHarness(self)
        self.successResultOf(h.store.setLock(keys.tokenRevoked(h.digest()), 60.0, None))
        self.assertEqual(h.login(), "refused")
        h.clock.advance(60)
        self.assertEqual(h.login(), "ok")

    def test_revokedDeviceOnlyOnItsAccount(self) -> None:
        h = PolicyHarness(self)
        self.successResultOf(
            h.store.setDeviceState(ALICE, h.digest(), "UUID", h.fingerprint(), REVOKED, None)
        )
        self.assertEqual(h.login(), "refused")
        self.assertEqual(h.login(account=BOB), "ok")
        self.assertEqual(h.devices(), {h.fingerprint(): REVOKED})

    def test_revokedDeviceWithRightPasswordAlerts(self) -> None:
        h = PolicyHarness(self)
        self.successResultOf(
            h.store.setDeviceState(ALICE, h.digest(), "UUID", h.fingerprint(), REVOKED, None)
        )
        h.login()
        self.assertEqual(h.observer.kinds(), ["device-refused"])


class UnderAttackTests(SynchronousTestCase):
    def test_configured(self) -> None:
        h = PolicyHarness(self)
        h.login(token="known")
        h.policy.config = h.policy.config.__class__(underAttack=True)
        self.assertEqual(h.login(token="known"), "ok")
        self.assertEqual(h.login(token="unknown"), "refused")
        self.assertEqual(h.devices()[h.fingerprint("unknown")], PENDING)
        self.assertEqual(h.login(token=None), "refused")

    def test_switchedOnByFailureRate(self) -> None:
        h = PolicyHarness(
            self, {"limits": {"attack_failures_per_minute": 3, "lockout_seconds": 300}}
        )
        h.login(token="known")
        for n in range(3):
            h.login(account=f"user{n}@example.test", token=f"bot{n}", password="wrong")
        self.assertIn("under-attack", h.observer.kinds())
        self.assertEqual(h.login(token="new"), "refused")
        self.assertEqual(h.login(token=None), "refused")
        self.assertEqual(h.login(token="known"), "ok")
        h.clock.advance(300)
        self.assertEqual(h.login(token="new"), "ok")

    def test_rateIsPerMinute(self) -> None:
        h = PolicyHarness(self, {"limits": {"attack_failures_per_minute": 3}})
        for n in range(3):
            h.login(token=f"bot{n}", account=f"user{n}@example.test", password="wrong")
            h.clock.advance(31)
        self.assertNotIn("under-attack", h.observer.kinds())
        self.assertEqual(h.login(token="new"), "ok")

    def test_neverByDefault(self) -> None:
        h = PolicyHarness(self, {"limits": {"unknown_device_failures": 0, "accounts_per_token": 0,
                                            "device_failures": 0, "address_failures": 0}})
        for n in range(500):
            h.login(token=f"bot{n}", password="wrong")
        self.assertEqual(h.login(token="new"), "ok")


class DeviceLimitTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.harness = PolicyHarness(self)
        self.harness.login(token="mine")
        self.harness.login(token="yours")

    def fail(self, times: int, token: str = "mine") -> None:  # type: ignore[override]
        for n in range(times):
            self.assertEqual(self.harness.login(token=token, password="wrong"), "refused")

    def test_lockedEvenWithRightPassword(self) -> None:
        h = self.harness
        self.fail(5)
        self.assertEqual(h.login(token="mine"), "refused")
        self.assertIn("device-locked", h.observer.kinds())

    def test_otherDeviceOnSameAddressUnaffected(self) -> None:
        h = self.harness
        self.fail(5)
        self.assertEqual(h.login(token="yours"), "ok")
        self.assertEqual(h.login(token="yours", protocol="imap"), "ok")
        self.assertEqual(h.login(token=None), "ok")

    def test_lockoutEnds(self) -> None:
        h = self.harness
        self.fail(5)
        h.clock.advance(899)
        self.assertEqual(h.login(token="mine"), "refused")
        h.clock.advance(1)
        self.assertEqual(h.login(token="mine"), "ok")

    def test_belowLimit(self) -> None:
        self.fail(4)
        self.assertEqual(self.harness.login(token="mine"), "ok")

    def test_windowEnds(self) -> None:
        self.fail(4)
        self.harness.clock.advance(600)
        self.fail(4)
        self.assertEqual(self.harness.login(token="mine"), "ok")

    def test_successResets(self) -> None:
        self.fail(4)
        self.harness.login(token="mine")
        self.fail(4)
        self.assertEqual(self.harness.login(token="mine"), "ok")

    def test_lockedAcrossAccounts(self) -> None:
        self.fail(5)
        self.assertEqual(self.harness.login(account=BOB, token="mine"), "refused")


class AddressLimitTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.harness = PolicyHarness(self, {"limits": {"address_failures": 3}})

    def test_withoutCLIENTIDLockedByAddress(self) -> None:
        h = self.harness
        for n in range(3):
            h.login(token=None, password="wrong")
        self.assertEqual(h.login(token=None), "refused")
        self.assertEqual(h.login(token=None, address="192.0.2.2"), "ok")
        self.assertIn("address-locked", h.observer.kinds())

    def test_CLIENTIDLoginsOnSameAddressUnaffected(self) -> None:
        h = self.harness
        for n in range(3):
            h.login(token=None, password="wrong")
        self.assertEqual(h.login(token="mine"), "ok")

    def test_CLIENTIDFailuresNotCountedByAddress(self) -> None:
        h = self.harness
        for n in range(3):
            h.login(token=f"t{n}", password="wrong")
        self.assertEqual(h.login(token=None), "ok")


class AccountsPerTokenTests(SynchronousTestCase):
    def test_tooManyAccounts(self) -> None:
        h = PolicyHarness(self, {"limits": {"accounts_per_token": 2}})
        self.assertEqual(h.login(account="a@example.test", password="wrong"), "refused")
        self.assertEqual(h.login(account="b@example.test"), "ok")
        self.assertEqual(h.login(account="b@example.test"), "ok")
        self.assertEqual(h.login(account="c@example.test"), "refused")
        # Locked now, on the accounts it tried before too.
        self.assertEqual(h.login(account="b@example.test"), "refused")
        [locked] = [a for a in h.observer.alerts if a.kind == "token-locked"]
        self.assertIsNone(locked.account)
        self.assertEqual(locked.fingerprint, h.fingerprint())
        self.assertEqual(h.login(account="c@example.test", token="other"), "ok")

    def test_windowEnds(self) -> None:
        h = PolicyHarness(self, {"limits": {"accounts_per_token": 2, "window_seconds": 60}})
        h.login(account="a@example.test")
        h.login(account="b@example.test")
        h.clock.advance(60)
        self.assertEqual(h.login(account="c@example.test"), "ok")


class UnknownDeviceLimitTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.harness = PolicyHarness(self, {"limits": {"unknown_device_failures": 3}})
        self.harness.login(token="known")

    def spray(self, times: int) -> None:
        for n in range(times):
            self.harness.login(token=f"random-{n}", password="wrong")

    def test_accountClosedToUnknownDevices(self) -> None:
        """
        An attacker with a fresh token every attempt is stopped: the
        account admits only its known devices for a while.
        """
        h = self.harness
        self.spray(3)
        self.assertEqual(h.login(token="fresh"), "refused")
        self.assertEqual(h.login(token="known"), "ok")
        self.assertEqual(h.login(account=BOB, token="fresh"), "ok")
        self.assertIn("account-closed", h.observer.kinds())

    def test_closedToLoginsWithoutCLIENTID(self) -> None:
        """
        Closed to unknown devices means closed to logins without a device
        too (learn mode, the default); other accounts are not affected,
        and the closure ends as for devices.
        """
        h = self.harness
        self.assertEqual(h.login(token=None), "ok")
        self.spray(3)
        self.assertEqual(h.login(token=None), "refused")
        self.assertEqual(h.login(account=BOB, token=None), "ok")
        h.clock.advance(900)
        self.assertEqual(h.login(token=None), "ok")

    def test_closureEnds(self) -> None:
        h = self.harness
        self.spray(3)
        h.clock.advance(900)
        self.assertEqual(h.login(token="fresh"), "ok")

    def test_knownDeviceFailuresDoNotClose(self) -> None:
        h = self.harness
        for n in range(3):
            h.login(token="known", password="wrong")
        self.assertEqual(h.login(token="fresh"), "ok")


class StoreFailureTests(SynchronousTestCase):
    def breakStore(self, harness: PolicyHarness) -> list[Any]:
        calls: list[Any] = []

        def broken(*args: Any) -> Any:
            calls.append(args)
            return defer.fail(StoreError("disk on fire"))

        self.patch(harness.store, "loadState", broken)
        return calls

    def storeLog(self, harness: PolicyHarness) -> list[str]:
        return [e["storeEvent"] for e in harness.logged if "storeEvent" in e]

    def test_tempfail(self) -> None:
        h = PolicyHarness(self)
        self.breakStore(h)
        self.assertEqual(h.login(), "tempfail")
        self.assertEqual(h.login(token=None), "tempfail")

    def test_loggedOncePerOutageAndRecovers(self) -> None:
        h = PolicyHarness(self)
        self.breakStore(h)
        for n in range(5):
            h.login()
        self.assertEqual(self.storeLog(h), ["down"])
        self.assertNotIn("disk on fire", repr([e for e in h.logged if e.get("storeEvent") == "up"]))
        self.patch(h.store, "loadState", h.store.__class__.loadState.__get__(h.store))
        self.assertEqual(h.login(), "ok")
        self.assertEqual(self.storeLog(h), ["down"])
        h.clock.advance(RECOVERY_SECONDS)
        self.assertEqual(h.login(), "ok")
        self.assertEqual(self.storeLog(h), ["down", "up"])
        self.breakStore(h)
        h.login()
        self.assertEqual(self.storeLog(h), ["down", "up", "down"])

    def test_flappingStoreLoggedOnce(self) -> None:
        """
        A store failing and working by turns (a full disk: reads work,
        writes fail) is one outage: one "unavailable" line and, once it
        has worked for RECOVERY_SECONDS, one "recovered", not a pair per
        login.
        """
        h = PolicyHarness(self)
        working = h.store.__class__.loadState.__get__(h.store)
        for n in range(10):
            self.breakStore(h)
            h.login()
            h.clock.advance(0.25)
            self.patch(h.store, "loadState", working)
            h.login()
            h.clock.advance(0.25)
        self.assertEqual(self.storeLog(h), ["down"])
        h.clock.advance(RECOVERY_SECONDS)
        h.login()
        self.assertEqual(self.storeLog(h), ["down", "up"])

    def test_failOpen(self) -> None:
        h = PolicyHarness(self, {**allowlist(), "policy": {"devices": "allowlist", "store_failure": "open"}})
        self.breakStore(h)
        self.assertEqual(h.login(), "ok")
        self.assertEqual(h.login(password="wrong"), "refused")

    def test_failOpenKeepsStaticRules(self) -> None:
        h = PolicyHarness(
            self, {"policy": {"require_clientid": True, "store_failure": "open"}}
        )
        self.breakStore(h)
        self.assertEqual(h.login(token=None), "refused")

    def test_storeThatHangs(self) -> None:
        h = PolicyHarness(self, {"policy": {"store_timeout_seconds": 2}})
        self.patch(h.store, "loadState", lambda query: defer.Deferred())
        d = h.checker.requestAvatarId(h.credentials())
        self.assertNoResult(d)
        h.clock.advance(2)
        from clientid_twisted._errors import TemporaryAuthenticationFailure

        self.failureResultOf(d, TemporaryAuthenticationFailure)

    def test_storeThatAnswersAtOnceNeedsNoTimer(self) -> None:
        """
        The store's timeout is a timer only for an answer still to come.
        """
        h = PolicyHarness(self, {"policy": {"store_timeout_seconds": 2}})
        scheduled = []
        original = h.clock.callLater

        def callLater(delay: float, *args: Any, **kwargs: Any) -> Any:
            scheduled.append(delay)
            return original(delay, *args, **kwargs)

        self.patch(h.clock, "callLater", callLater)
        attempt = Attempt(ALICE, ClientIdentity("UUID", "a-token"), "192.0.2.1", "smtp", True)
        self.successResultOf(h.policy.evaluate(attempt))
        self.assertNotIn(2, scheduled)

    def test_writeFailureDoesNotFailLogin(self) -> None:
        h = PolicyHarness(self)
        self.patch(h.store, "recordOutcome", lambda record: defer.fail(StoreError("full")))
        self.assertEqual(h.login(), "ok")
        self.assertEqual(self.storeLog(h), ["down"])


class AttemptTests(SynchronousTestCase):
    def test_repr(self) -> None:
        """
        Neither an attempt nor a decision shows the token.
        """
        h = PolicyHarness(self)
        attempt = Attempt(ALICE, ClientIdentity("UUID", "secret-token"), "192.0.2.1", "smtp", True)
        decision = self.successResultOf(h.policy.evaluate(attempt))
        self.assertEqual(decision.verdict, Verdict.ACCEPT)
        self.assertNotIn("secret-token", repr(decision))
