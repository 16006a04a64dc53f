"""Headless Firefox for tests: Debian's firefox-esr driven over Marionette (DESIGN section 8).

`firefox()` starts `firefox-esr --headless --marionette` on a fresh profile whose `user.js`
turns on the fake camera and microphone without a permission prompt, lets media autoplay, and
asks Marionette for a free port (`marionette.port` 0: Firefox writes the port it took to
`MarionetteActivePort` in the profile). PyPI's `marionette-driver` talks to it directly: no
geckodriver. The process (and its content processes, one process group) is ended and the
profile deleted on exit, whatever happened.

`Firefox.new_page(url)` opens a top-level window per page (a background *tab* would be
throttled); every `FirefoxPage` method switches to its window first. Marionette is a blocking
client: like Playwright's sync API it runs in a worker thread (`trio.to_thread.run_sync`), and
every call is bounded (script and page-load timeouts), so the thread always returns.

Firefox ignores loopback ICE candidates: a server a Firefox page calls must announce a
non-loopback address of this machine (arbiter/testing/hostaddr.py makes one) and answer from
the address a packet arrived on (arbiter/sfu/endpoint.py).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

FIREFOX = Path("/usr/bin/firefox-esr")
START_TIMEOUT = 30.0  # Firefox up and its Marionette port written
SCRIPT_TIMEOUT = 10.0  # any one execute_script / execute_async_script
PAGE_LOAD_TIMEOUT = 15.0
LOG_TAIL = 30

# The profile's user.js: what a test needs, and quiet (no first-run pages, updates, telemetry or
# remote services: this machine reaches no such host and must not try).
PREFS: dict[str, Any] = {
    "marionette.port": 0,
    # Fake devices (a test pattern and a tone), granted without a prompt.
    "media.navigator.streams.fake": True,
    "media.navigator.permission.disabled": True,
    # Autoplay with sound, in headless windows that are never "activated" by a user.
    "media.autoplay.default": 0,
    "media.autoplay.blocking_policy": 0,
    "media.autoplay.block-webaudio": False,
    "media.block-autoplay-until-in-foreground": False,
    "media.suspend-background-video.enabled": False,
    # Real host candidates rather than mDNS names (the SFU is ICE-lite and ignores them, but
    # getStats and logs then show where Firefox sends from).
    "media.peerconnection.ice.obfuscate_host_addresses": False,
    # The web page's console on stdout, kept in the profile's log for failure reports.
    "devtools.console.stdout.content": True,
    "browser.dom.window.dump.enabled": True,
    # Quiet: no first run, updates, telemetry or remote services.
    "app.update.disabledForTesting": True,
    "app.normandy.enabled": False,
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.homepage_override.mstone": "ignore",
    "browser.startup.page": 0,
    "browser.aboutwelcome.enabled": False,
    "browser.safebrowsing.update.enabled": False,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "browser.tabs.warnOnClose": False,
    "browser.warnOnQuit": False,
    "browser.sessionstore.resume_from_crash": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "datareporting.healthreport.uploadEnabled": False,
    "toolkit.telemetry.reportingpolicy.firstRun": False,
    "extensions.update.enabled": False,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "services.settings.server": "data:,",
    "app.shield.optoutstudies.enabled": False,
    "messaging-system.rsexperimentloader.enabled": False,
    "media.gmp-manager.updateEnabled": False,
    "dom.max_script_run_time": 0,
}


def require_firefox() -> None:
    missing = []
    if not FIREFOX.exists():
        missing.append(f"{FIREFOX} (apt-get install --no-install-recommends firefox-esr)")
    try:
        import marionette_driver  # noqa: F401
    except ImportError:
        missing.append("marionette-driver (pip install -e '.[test]')")
    if missing:
        pytest.fail(
            "the Firefox tests need " + " and ".join(missing) + "; scripts/test installs both",
            pytrace=False,
        )


def user_js(prefs: dict[str, Any]) -> str:
    return "".join(f"user_pref({json.dumps(k)}, {json.dumps(v)});\n" for k, v in prefs.items())


class FirefoxPage:
    """One top-level window of a `Firefox`."""

    def __init__(self, browser: Firefox, handle: str, label: str) -> None:
        self.browser = browser
        self.handle = handle
        self.label = label

    @property
    def client(self) -> Any:
        client = self.browser.client
        if client.current_window_handle != self.handle:
            client.switch_to_window(self.handle)
        return client

    def goto(self, url: str) -> None:
        self.client.navigate(url)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (its own globals, no sandbox)."""
        return self.client.execute_script(f"return ({expression});", sandbox=None)

    def evaluate_async(self, expression: str) -> Any:
        """The settled value of a JavaScript expression that yields a promise."""
        return self.client.execute_async_script(
            f"const done = arguments[arguments.length - 1];"
            f"Promise.resolve({expression}).then(done, (e) => done({{error: String(e)}}));",
            sandbox=None,
        )

    def fill(self, selector: str, text: str) -> None:
        element = self.client.find_element("css selector", selector)
        element.clear()
        element.send_keys(text)

    def click(self, selector: str) -> None:
        self.client.find_element("css selector", selector).click()

    def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.client.screenshot(format="binary"))
        return path


class Firefox:
    """A running headless Firefox and its Marionette session (`firefox()` makes one)."""

    def __init__(self, client: Any, process: subprocess.Popen[bytes], log_path: Path) -> None:
        self.client = client
        self.process = process
        self.log_path = log_path
        self.pages: list[FirefoxPage] = []

    def new_page(self, url: str, label: str = "") -> FirefoxPage:
        if not self.pages:
            handle = self.client.window_handles[0]  # the window Firefox started with
        else:
            handle = self.client.open(type="window", focus=False)["handle"]
        page = FirefoxPage(self, handle, label or f"firefox-{len(self.pages) + 1}")
        self.pages.append(page)
        page.goto(url)
        return page

    def log_tail(self, lines: int = LOG_TAIL) -> list[str]:
        """The last lines Firefox wrote (the pages' console among them)."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return []
        return text.splitlines()[-lines:]


def _wait_for_port(profile: Path, process: subprocess.Popen[bytes], log_path: Path) -> int:
    port_file = profile / "MarionetteActivePort"
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            text = port_file.read_text().strip()
        except OSError:
            text = ""
        if text.isdigit():
            return int(text)
        time.sleep(0.1)
    tail = log_path.read_text(errors="replace").splitlines()[-20:] if log_path.exists() else []
    raise RuntimeError(
        f"Firefox did not open its Marionette port within {START_TIMEOUT} s "
        f"(exit code {process.poll()}): {tail}"
    )


def _end(process: subprocess.Popen[bytes]) -> None:
    """End Firefox and its content processes (its own process group), politely then not."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@contextmanager
def firefox(prefs: dict[str, Any] | None = None) -> Iterator[Firefox]:
    """A headless Firefox on a fresh profile, ended (with its profile) on exit."""
    from marionette_driver.marionette import Marionette

    profile = Path(tempfile.mkdtemp(prefix="arbiter-firefox-"))
    log_path = profile / "firefox.log"
    process: subprocess.Popen[bytes] | None = None
    client: Any = None
    try:
        (profile / "user.js").write_text(user_js({**PREFS, **(prefs or {})}), encoding="utf-8")
        env = {**os.environ, "MOZ_HEADLESS": "1", "MOZ_CRASHREPORTER_DISABLE": "1"}
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [str(FIREFOX), "--headless", "--marionette", "--no-remote",
                 "--profile", str(profile), "about:blank"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                start_new_session=True,  # its own process group: ended as one
            )  # fmt: skip
        port = _wait_for_port(profile, process, log_path)
        client = Marionette(host="127.0.0.1", port=port, startup_timeout=int(START_TIMEOUT))
        client.start_session()
        client.timeout.script = SCRIPT_TIMEOUT
        client.timeout.page_load = PAGE_LOAD_TIMEOUT
        client.timeout.implicit = 0
        yield Firefox(client, process, log_path)
    finally:
        if client is not None:
            try:
                client.delete_session()
            except Exception:
                pass  # the process is ended below either way
        if process is not None:
            _end(process)
        shutil.rmtree(profile, ignore_errors=True)
