"""
Tests for L{clientid_twisted._devicename}: what an owner may call a device.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from clientid_twisted._devicename import MAX_NAME_LENGTH, BadDeviceName, checkDeviceName


class CheckDeviceNameTests(SynchronousTestCase):
    def test_kept(self) -> None:
        """
        Printable text of any script is kept as typed, without surrounding
        space.
        """
        self.assertEqual(checkDeviceName("  Anna's phone "), "Anna's phone")
        self.assertEqual(checkDeviceName("T\u00e9l\u00e9phone \u6f22\u5b57 \U0001f4f1"), "T\u00e9l\u00e9phone \u6f22\u5b57 \U0001f4f1")
        self.assertEqual(checkDeviceName("<b>&amp;</b>"), "<b>&amp;</b>")

    def test_emptyRemoves(self) -> None:
        self.assertIsNone(checkDeviceName(""))
        self.assertIsNone(checkDeviceName(" \t "))

    def test_length(self) -> None:
        self.assertEqual(checkDeviceName("x" * MAX_NAME_LENGTH), "x" * MAX_NAME_LENGTH)
        e = self.assertRaises(BadDeviceName, checkDeviceName, "x" * (MAX_NAME_LENGTH + 1))
        self.assertEqual(
            str(e), f"A device name has at most {MAX_NAME_LENGTH} characters; this one has {MAX_NAME_LENGTH + 1}."
        )

    def test_controlCharactersRefused(self) -> None:
        """
        Line breaks, escapes, NUL, DEL, C1 controls, bidirectional
        overrides, zero-width and line separators are refused with a
        message that says so.
        """
        for bad in ("a\nb", "a\rb", "a\x1b[31mb", "a\x00b", "a\x7fb", "a\x85b", "a\u202eb",
                    "a\u200bb", "a\u2028b", "a\tb"):
            e = self.assertRaises(BadDeviceName, checkDeviceName, bad)
            self.assertIn("control characters", str(e))
