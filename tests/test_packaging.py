"""Dependencies: what `arbiter serve` loads, and the lock files it is installed from.

- A running `arbiter serve` (the gateway and its `arbiter sfu` worker, a room created) has not
  imported aiortc, PyAV, matplotlib or httpx: those are the test and bench extras (setup.cfg),
  104 of 182 MB of the old venv and 27 MiB of server memory.
- requirements/serve.txt pins (==) every install_requires name within setup.cfg's bounds, and
  test.txt / bench.txt hold the same pins plus their extras (scripts/lock compiles them so).
- On a fresh clone, the install step of `scripts/serve` (scripts/_venv.sh) puts exactly
  requirements/serve.txt into a new .venv (slow: pip downloads and installs; marked `install`).
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
# (numpy is not here: sqlite-utils imports it when it happens to be installed, as in a venv
# that also ran scripts/bench; it is not in requirements/serve.txt.)
NOT_FOR_SERVE = {"aiortc", "av", "matplotlib", "httpx", "playwright", "pytest"}

# Loaded by every Python process started with this directory on PYTHONPATH (the gateway and
# the workers it spawns inherit the environment): once the trigger file exists, it writes the
# process's module names to <dir>/modules-<pid>.json, again every 0.2 s (a worker keeps
# importing as it starts).
SITECUSTOMIZE = """
import json, os, sys, threading, time
_dir = os.environ["TEST_ARBITER_MODULE_DUMP"]
def _dump():
    while True:
        time.sleep(0.2)
        if os.path.exists(os.path.join(_dir, "trigger")):
            path = os.path.join(_dir, f"modules-{os.getpid()}.json")
            with open(path + ".tmp", "w") as f:
                json.dump({"argv": sys.argv, "modules": sorted(sys.modules)}, f)
            os.replace(path + ".tmp", path)
threading.Thread(target=_dump, daemon=True).start()
"""


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(method: str, url: str, body: dict[str, str] | None = None) -> dict[str, object]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=5) as response:
        return dict(json.load(response))


def test_arbiter_serve_imports_no_aiortc_av_or_bench_dependencies(tmp_path: Path) -> None:
    dump = tmp_path / "dump"
    dump.mkdir()
    (dump / "sitecustomize.py").write_text(SITECUSTOMIZE)
    port = free_tcp_port()
    config = tmp_path / "arbiter.toml"
    config.write_text(
        f'[http]\nhost = "127.0.0.1"\nport = {port}\n'
        f'[media]\nlisten = "127.0.0.1"\nport = {free_udp_port()}\nannounced_ip = ["127.0.0.1"]\n'
        f'[rooms]\nidle_pool = 0\n[workers]\nlocal = 1\n[store]\npath = "{tmp_path / "a.db"}"\n'
    )
    # Only the file given: no ARBITER_* overrides from the environment running the tests.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARBITER_")}
    env.update(PYTHONPATH=str(dump), TEST_ARBITER_MODULE_DUMP=str(dump))
    arbiter = Path(sys.executable).parent / "arbiter"
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(arbiter), "serve", "--config", str(config)], stdout=out, stderr=out, env=env
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                http("GET", base + "/config")
                break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        # A room: its SFU starts in the worker (the media plane's modules load there).
        while True:
            try:
                room = http("PUT", base + "/createRoom")
                break
            except OSError:  # 500 until the worker has attached
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        claimed = http("PATCH", base + "/claimRoom", {"urlPath": "packaging"})
        assert claimed["roomId"] == room["roomId"]
        (dump / "trigger").touch()
        time.sleep(1.0)  # five dumps: every process has written the modules it holds now
        dumps = [json.loads(p.read_text()) for p in sorted(dump.glob("modules-*.json"))]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    roles = sorted("sfu" if "sfu" in d["argv"] else "serve" for d in dumps)
    assert roles == ["serve", "sfu"], [d["argv"] for d in dumps]
    for d in dumps:
        modules = set(d["modules"])
        assert {"trio", "arbiter.config"} <= modules, d["argv"]  # the dump saw a real process
        loaded = sorted(m for m in modules if m.split(".")[0] in NOT_FOR_SERVE)
        assert loaded == [], (d["argv"], loaded)
    serve = next(d for d in dumps if "sfu" not in d["argv"])
    assert {"arbiter.server", "hypercorn"} <= set(serve["modules"])


def pins(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9._-]+)==(\S+)", line)
        if m:
            out[canonicalize_name(m.group(1))] = m.group(2)
    return out


def requirements(option: str) -> list[Requirement]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    section, _, key = option.partition(":")
    lines = cfg[section][key].splitlines()
    return [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]


def test_lock_files_pin_setup_cfg() -> None:
    serve = pins(ROOT / "requirements" / "serve.txt")
    for req in requirements("options:install_requires"):
        name = canonicalize_name(req.name)
        assert name in serve, f"{req.name} (setup.cfg install_requires) is not in serve.txt"
        assert req.specifier.contains(serve[name]), (str(req), serve[name])
    assert sorted((NOT_FOR_SERVE | {"numpy"}) & set(serve)) == []
    for extra in ("test", "bench"):
        locked = pins(ROOT / "requirements" / f"{extra}.txt")
        # The served versions are the tested ones.
        assert {k: locked.get(k) for k in serve} == serve, extra
        for req in requirements(f"options.extras_require:{extra}"):
            name = canonicalize_name(req.name)
            assert name in locked, f"{req.name} ({extra} extra) is not in {extra}.txt"
            assert req.specifier.contains(locked[name]), (extra, str(req), locked[name])
    assert "aiortc" in pins(ROOT / "requirements" / "bench.txt")
    # What this test run uses is what test.txt pins (scripts/test installs from it).
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "list", "--format=json", "--exclude-editable"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    versions = {canonicalize_name(p["name"]): p["version"] for p in json.loads(installed.stdout)}
    test_pins = pins(ROOT / "requirements" / "test.txt")
    assert {k: versions.get(k) for k in test_pins} == test_pins


@pytest.mark.install
@pytest.mark.timeout(600)
def test_scripts_serve_installs_the_lock_file_on_a_fresh_clone(tmp_path: Path) -> None:
    """The install step of ./scripts/serve (scripts/_venv.sh) on a fresh clone of this
    checkout's HEAD: a new .venv with exactly the pins of requirements/serve.txt."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.fail("needs git and a git checkout (CI runs a clone)", pytrace=False)
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "ARBITER_EXTRAS")}
    started = time.monotonic()
    install = subprocess.run(
        ["bash", "-c", "source scripts/_venv.sh"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    seconds = time.monotonic() - started
    assert install.returncode == 0, install.stdout + install.stderr
    announced = "Installing the versions pinned in requirements/serve.txt into .venv (once)\n"
    assert install.stderr == announced
    venv_python = clone / ".venv" / "bin" / "python"
    frozen = subprocess.run(
        [str(venv_python), "-m", "pip", "list", "--format=json", "--exclude-editable"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    versions = {canonicalize_name(p["name"]): p["version"] for p in json.loads(frozen.stdout)}
    for tool in ("pip", "setuptools", "wheel"):  # the venv's own, not the application's
        versions.pop(tool, None)
    assert versions == pins(clone / "requirements" / "serve.txt")
    assert (clone / ".venv" / "bin" / "arbiter").exists()
    probe = subprocess.run(
        [str(venv_python), "-c", "import arbiter.server, arbiter.cli; import aiortc"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.returncode == 1 and "No module named 'aiortc'" in probe.stderr, probe.stderr
    # A second run finds the stamp and installs nothing.
    again = subprocess.run(
        ["bash", "-c", "source scripts/_venv.sh"], cwd=clone, env=env, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert (again.returncode, again.stderr) == (0, "")
    print(f"fresh-clone install of requirements/serve.txt: {seconds:.0f} s")
