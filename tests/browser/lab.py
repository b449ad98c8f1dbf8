"""JupyterLab in the background and headless Chromium driving it through Playwright's Python API, as a reader
opens the notebooks: Run All, look at what each cell shows, move the widgets. Used by ``test_lab.py``
(``make test-browser``)."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from castlib.config import REPO_ROOT

# Lab settings for a test: every cell in the page (no windowing, so the DOM holds every output), no autosave (the
# test saves when it reads the file) and no news or update pop-ups over the page.
SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                        "checkForUpdates": False},
}


# git's clean filter for notebooks/*.ipynb (`make notebook-filter` sets the same): outputs, execution counts and the
# kernel's language_info (its Python version) go; cell ids stay (jupytext keeps them in the committed files).
NBSTRIPOUT_ARGS = ["--keep-id", "--extra-keys", "metadata.language_info"]


def chromium_path() -> str | None:
    """Chromium or Chrome: ``$CHROMIUM``, else the first of chromium, chromium-browser, google-chrome on PATH."""
    given = os.environ.get("CHROMIUM")
    if given:
        return given if Path(given).is_file() else None
    return next((found for name in ("chromium", "chromium-browser", "google-chrome")
                 if (found := shutil.which(name))), None)


def missing() -> str | None:
    """Why the browser test cannot run here (one line), or None."""
    for module, package in (("playwright", "playwright"), ("jupyterlab", "jupyterlab")):
        try:
            __import__(module)
        except ImportError:
            return f"no {package} in this Python: pip install -e '.[browser]' (make test-browser installs it)"
    if chromium_path() is None:
        return ("no Chromium: apt-get install chromium (Debian; make test-browser installs it) or set CHROMIUM to a "
                "Chrome or Chromium binary")
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def jupyter_lab(root: Path, home: Path, timeout: float = 180):
    """A JupyterLab server on 127.0.0.1 serving ``root``, its settings, workspaces, runtime files and Save's
    checkpoints under ``home``; its kernels import this checkout's castlib (``PYTHONPATH``). Yields the lab's URL
    (with token)."""
    port, token = _free_port(), secrets.token_hex(16)
    for name, value in SETTINGS.items():
        path = home / "settings" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"), "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
           "JUPYTER_CONFIG_DIR": str(home / "config"), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    log = open(home / "lab.log", "w")  # noqa: SIM115 (closed below)
    server = subprocess.Popen([sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1",
                               f"--port={port}", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
                               "--ServerApp.port_retries=0",
                               # Save's checkpoint copy goes under home, not into .ipynb_checkpoints/ beside the
                               # notebook in the checkout (an absolute checkpoint_dir is used as it is)
                               f"--FileCheckpoints.checkpoint_dir={home / 'checkpoints'}",
                               *(["--allow-root"] if os.geteuid() == 0 else [])],
                              env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"JupyterLab did not start: see {home / 'lab.log'}") from None
                time.sleep(1)
        yield base, token
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


class Notebook:
    """One notebook open in the lab (a Playwright page)."""

    def __init__(self, page, base: str, token: str, path: str):
        self.page = page
        page.goto(f"{base}/lab/tree/{path}?token={token}&reset")  # reset: no other notebook restored beside it
        self.panel = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
        self.panel.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=120_000)
        self.wait_kernel(180)

    def wait_kernel(self, timeout: float) -> None:
        """Until the notebook's kernel is connected and idle (the status bar reads "| Idle"), accepting the kernel
        choice if the lab asks: a Run All given before would run only what the kernel took first."""
        status = self.page.locator("#jp-main-statusbar")

        def ready() -> bool:
            self.accept_dialogs()
            return bool(re.search(r"\|\s*Idle", status.inner_text()))

        wait_until(ready, timeout, "the notebook's kernel connected and idle")

    def accept_dialogs(self) -> list[str]:
        """Accept any dialog over the page (JupyterLab's kernel choice: the notebook's own kernel is offered
        first); returns their texts."""
        seen = []
        dialog = self.page.locator(".jp-Dialog")
        while dialog.count() and dialog.first.is_visible():
            seen.append(" ".join(dialog.first.inner_text().split()))
            dialog.first.locator(".jp-Dialog-button.jp-mod-accept").first.click()
            time.sleep(0.5)
        return seen

    def command(self, menu: str, command: str) -> None:
        """Click ``command`` (a JupyterLab command id) in the top menu ``menu``, as a reader does; a dialog that
        opens over the page meanwhile (the kernel choice) is accepted and the click tried again."""
        for attempt in range(3):
            self.accept_dialogs()
            try:
                self.page.locator(".lm-MenuBar-item", has_text=menu).first.click(timeout=10_000)
                self.page.locator(f'.lm-Menu-item[data-command="{command}"]').first.click(timeout=10_000)
                return
            except Exception:  # Playwright's TimeoutError: something covered the menu
                if attempt == 2:
                    raise
                self.page.keyboard.press("Escape")

    def prompts(self) -> list[str]:
        return self.panel.locator(".jp-CodeCell .jp-InputPrompt").all_inner_texts()

    def run_all(self, timeout: float) -> float:
        """Run > Run All Cells, and wait until every code cell has run (a number in its prompt) and the kernel is
        idle; returns the seconds it took."""
        start = time.monotonic()
        self.wait_kernel(180)
        self.command("Run", "runmenu:run-all")
        deadline = start + timeout
        while True:
            prompts = self.prompts()
            if all(re.fullmatch(r"\[\d+\]:", p.strip()) for p in prompts):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"Run All not done after {timeout:.0f} s: prompts {prompts}")
            if time.monotonic() - start > 30 and not any("*" in p for p in prompts):
                raise AssertionError(f"Run All stopped before the end (an error, or a cell not run): {prompts}")
            time.sleep(1)
        self.wait_kernel(60)
        return time.monotonic() - start

    def save(self, path: Path) -> dict:
        """File > Save, and the notebook as the lab wrote it."""
        before = path.stat().st_mtime_ns
        self.command("File", "docmanager:save")
        deadline = time.monotonic() + 30
        while path.stat().st_mtime_ns == before and time.monotonic() < deadline:
            time.sleep(0.5)
        return json.loads(path.read_text())

    def code_cell(self, text: str):
        """The code cell whose source contains ``text``."""
        return self.panel.locator(".jp-CodeCell").filter(has=self.page.locator(".jp-InputArea", has_text=text))


def png_ink(src: str) -> float:
    """The share of an image's pixels (a ``data:`` URL) that are drawn dark on an opaque background: 0 for a
    blank or transparent figure."""
    import numpy as np
    from PIL import Image

    data = base64.b64decode(src.split(",", 1)[1])
    pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGBA")).astype(float)
    drawn = (pixels[..., 3] > 200) & (pixels[..., :3].mean(-1) < 160)
    return float(drawn.mean())


def image_sources(locator) -> list[str]:
    """The ``src`` of every image rendered under ``locator`` (loaded, non-empty)."""
    return locator.locator("img").evaluate_all(
        "imgs => imgs.filter(i => i.complete && i.naturalWidth > 0).map(i => i.src)")


def wait_until(predicate, timeout: float, what: str, poll: float = 0.5):
    """``predicate()`` once truthy (its value), else a TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not seen within {timeout:.0f} s")
        time.sleep(poll)
