# -*- test-case-name: tests.test_web_resource -*-
"""
The HTML of the self-service pages.

Plain server-rendered HTML: no script, no third-party asset, one
stylesheet from this server; headings, labels and table headers for screen
readers; readable at a phone's width.  Every value is escaped here, and a
device is shown by type and short fingerprint only, never its token.
"""

from __future__ import annotations

import datetime
from html import escape
from typing import Sequence

from clientid_twisted.policy import MAX_NAME_LENGTH
from clientid_twisted.store import DeviceRecord, Event

__all__ = ["STYLESHEET", "page", "message", "confirmLink", "signInForm", "devicePage", "describeDevice"]

STYLESHEET = b"""\
body{font-family:system-ui,sans-serif;margin:0;padding:1rem;max-width:48rem;line-height:1.5;color:#111;background:#fff}
h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:2rem}
table{border-collapse:collapse;width:100%;font-size:.95rem}
th,td{text-align:left;padding:.4rem;border-bottom:1px solid #ccc;vertical-align:top}
form.inline{display:inline}
button{font-size:1rem;padding:.4rem .8rem;margin:.2rem 0}
input[type=text],input[type=email]{font-size:1rem;padding:.4rem;max-width:100%}
:focus{outline:3px solid #1a5fb4;outline-offset:2px}
.danger{background:#a51d2d;color:#fff;border:0}
.state-approved{color:#26a269}.state-revoked{color:#a51d2d}
code{font-size:.9rem}
.sr{position:absolute;left:-9999px;width:1px;height:1px;overflow:hidden}
form.rename{margin-top:.3rem}form.rename input{width:12rem}
caption{text-align:left;font-weight:bold;padding:.4rem 0}
@media (max-width:40rem){table,caption,thead,tbody,tr,th,td{display:block}thead{position:absolute;left:-9999px}td{border:0;padding:.15rem .4rem}tr{border-bottom:1px solid #ccc;padding:.5rem 0}td[data-label]::before{content:attr(data-label) ": ";font-weight:bold}}
"""


def _when(t: float | None) -> str:
    if t is None:
        return "never"
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def page(title: str, body: str) -> bytes:
    """
    A whole page around C{body} (already escaped HTML).
    """
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title>"
        '<link rel="stylesheet" href="/style.css"></head>'
        f"<body><main><h1>{escape(title)}</h1>{body}</main></body></html>\n"
    ).encode("utf-8")


def message(title: str, *paragraphs: str) -> bytes:
    """
    A page that only says something.
    """
    return page(title, "".join(f"<p>{escape(p)}</p>" for p in paragraphs))


def _hidden(name: str, value: str) -> str:
    return f'<input type="hidden" name="{escape(name)}" value="{escape(value)}">'


def confirmLink(
    action: str, account: str, typeName: str, fingerprint: str, token: str, csrf: str, path: str
) -> bytes:
    """
    The confirmation page of an approve or disown link: the change happens
    only when its button is pressed (a POST), never on opening the link.
    """
    device = f"<code>{escape(typeName)} {escape(fingerprint)}</code>"
    if action == "approve":
        title = "Approve this device?"
        text = f"<p>The device {device} will be allowed to log in to <strong>{escape(account)}</strong>.</p>"
        button = "<button type=\"submit\">Approve this device</button>"
    else:
        title = "This wasn't me"
        text = (
            f"<p>The device {device} will be refused on <strong>{escape(account)}</strong>, "
            "and approval links for it stop working.</p>"
        )
        button = '<button type="submit" class="danger">Revoke this device</button>'
    form = (
        f'<form method="post" action="{escape(path)}">'
        f"{_hidden('t', token)}{_hidden('csrf', csrf)}{button}</form>"
    )
    return page(title, text + form)


def signInForm(csrf: str, notice: str = "") -> bytes:
    """
    The device page's sign-in: ask for a link by address.
    """
    said = f'<p role="status">{escape(notice)}</p>' if notice else ""
    body = (
        f"{said}<p>Enter your mail address. A sign-in link is sent to that mailbox's INBOX: "
        "read it in your mail program, then open the link.</p>"
        '<form method="post" action="/devices/signin">'
        f"{_hidden('csrf', csrf)}"
        '<p><label for="address">Mail address</label><br>'
        '<input type="email" id="address" name="address" autocomplete="username" required size="40"></p>'
        '<button type="submit">Mail me a sign-in link</button></form>'
    )
    return page("Your mail devices", body)


def confirmSignIn(token: str, csrf: str) -> bytes:
    body = (
        "<p>Sign in to the device page of your mail account.</p>"
        '<form method="post" action="/signin">'
        f"{_hidden('t', token)}{_hidden('csrf', csrf)}"
        '<button type="submit">Sign in</button></form>'
    )
    return page("Sign in", body)


def devicePage(
    account: str, devices: Sequence[DeviceRecord], events: Sequence[Event], csrf: str, notice: str = ""
) -> bytes:
    """
    The signed-in owner's devices, with their actions, and recent events.
    """
    said = f'<p role="status">{escape(notice)}</p>' if notice else ""
    rows = []
    for n, d in enumerate(devices):
        device = f"<code>{escape(d.typeName)} {escape(d.fingerprint)}</code>"
        if d.name is not None:
            device = f"<strong>{escape(d.name)}</strong><br>{device}"
        actions = []
        if d.state != "approved":
            actions.append(_action("approve", "Approve", d, csrf))
        if d.state != "revoked":
            actions.append(_action("revoke", "Revoke", d, csrf, danger=True))
        actions.append(_renameForm(n, d, csrf))
        rows.append(
            "<tr>"
            f"<td>{device}</td>"
            f'<td data-label="State" class="state-{escape(d.state)}">{escape(d.state)}</td>'
            f'<td data-label="First seen">{_when(d.firstSeen)}</td>'
            f'<td data-label="Last seen">{_when(d.lastSeen)}</td>'
            f'<td data-label="Last address">{escape(d.lastAddress or "-")}</td>'
            f'<td data-label="Failures">{d.failures}</td>'
            f"<td>{''.join(actions)}</td></tr>"
        )
    table = (
        "<table><caption>Devices that tried to log in</caption><thead><tr>"
        '<th scope="col">Device</th><th scope="col">State</th><th scope="col">First seen</th>'
        '<th scope="col">Last seen</th><th scope="col">Last address</th>'
        '<th scope="col">Failures</th><th scope="col">Actions</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
        if rows
        else "<p>No device has logged in to this account yet.</p>"
    )
    history = "".join(
        f"<li>{_when(e.time)}: {escape(e.kind)}"
        + (f" <code>{escape(e.typeName or '')} {escape(e.fingerprint or '')}</code>" if e.fingerprint else "")
        + (f" from {escape(e.address)}" if e.address else "")
        + (f" ({escape(e.detail)})" if e.detail else "")
        + "</li>"
        for e in reversed(events)
    )
    body = (
        f"{said}<p>Signed in as <strong>{escape(account)}</strong>.</p>"
        f"<h2>Devices</h2>{table}"
        f"<h2>Recent events</h2><ul>{history or '<li>None.</li>'}</ul>"
        f'<form method="post" action="/signout">{_hidden("csrf", csrf)}'
        '<button type="submit">Sign out</button></form>'
    )
    return page("Your mail devices", body)


def describeDevice(device: DeviceRecord) -> str:
    """
    How a device is called in plain text (not escaped): its owner's name
    for it, if any, then its type and short fingerprint.
    """
    known = f"{device.typeName} {device.fingerprint}"
    return known if device.name is None else f"{device.name} ({known})"


def _action(action: str, label: str, device: DeviceRecord, csrf: str, danger: bool = False) -> str:
    css = ' class="danger"' if danger else ""
    return (
        '<form class="inline" method="post" action="/devices/change">'
        f"{_hidden('csrf', csrf)}{_hidden('action', action)}{_hidden('fingerprint', device.fingerprint)}"
        f'<button type="submit"{css} aria-label="{escape(label)} {escape(describeDevice(device))}">'
        f"{escape(label)}</button></form> "
    )


def _renameForm(n: int, device: DeviceRecord, csrf: str) -> str:
    """
    The form that names the C{n}th device: a labelled text field holding
    its current name, and a button.
    """
    field = f"device-name-{n}"
    return (
        '<form class="rename" method="post" action="/devices/change">'
        f"{_hidden('csrf', csrf)}{_hidden('action', 'rename')}{_hidden('fingerprint', device.fingerprint)}"
        f'<label for="{field}">Name<span class="sr"> for {escape(describeDevice(device))}</span></label> '
        f'<input type="text" id="{field}" name="name" value="{escape(device.name or "")}" '
        f'maxlength="{MAX_NAME_LENGTH}" autocomplete="off" placeholder="e.g. Anna\'s phone"> '
        f'<button type="submit" aria-label="Rename {escape(describeDevice(device))}">Rename</button></form>'
    )
