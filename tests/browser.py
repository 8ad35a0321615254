"""Headless Chromium driven over the Chrome DevTools Protocol on a pipe (`--remote-debugging-pipe`), for the tests of
the report page: no Python package, no driver binary, no port; only Debian's `chromium` (`apt-get install chromium`).

Chromium reads commands from its file descriptor 3 and writes answers and events to 4, each a JSON text ended by a
NUL byte. Every event is kept, so a test can ask afterwards which requests the page made and whether a dialog opened.
"""

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

# The flags that keep Chromium off the network on a closed machine, and out of any profile but its own.
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-default-apps", "--disable-extensions",
    "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio", "--remote-debugging-pipe",
]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _above_four(fd: int) -> int:
    """The same pipe end on a number above 4, so that moving the ends to 3 and 4 in the child never overwrites one
    with the other."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return moved


class BrowserError(RuntimeError):
    pass


class Chromium:
    """One headless Chromium and one page (tab) in it."""

    def __init__(self, executable: str, profile: Path, width: int = 1200, height: int = 900, timeout: float = 60.0):
        self.timeout = timeout
        commands_read, self._commands = os.pipe()
        self._answers, answers_write = os.pipe()
        commands_read, answers_write = _above_four(commands_read), _above_four(answers_write)
        # Chromium's own log goes to a file: a pipe nobody reads would fill up and stall it.
        self.log = Path(profile).with_name(Path(profile).name + ".log")
        command = [executable, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank"]
        # bash moves the pipe ends to 3 and 4 as it starts Chromium (in the order written, so neither overwrites the
        # other), and closes the originals.
        moves = f"3<&{commands_read} 4>&{answers_write} {commands_read}<&- {answers_write}>&-"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                ["bash", "-c", f'exec "$@" {moves}', "chromium", *command],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, pass_fds=(commands_read, answers_write),
            )
        os.close(commands_read)
        os.close(answers_write)
        self._buffer = b""
        self._next_id = 0
        self._replies: dict[int, dict] = {}
        self.events: list[dict] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Network", "Runtime", "Log"):
            self.send(f"{domain}.enable")
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    # -- protocol ------------------------------------------------------------------------------------------------

    def _write(self, message: dict) -> None:
        data = json.dumps(message).encode("utf-8") + b"\0"
        while data:
            data = data[os.write(self._commands, data):]

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._answers], [], [], left)[0]:
                raise BrowserError(f"Chromium did not answer within {self.timeout} s")
            chunk = os.read(self._answers, 1 << 20)
            if not chunk:
                log = self.log.read_text(errors="replace")[-2000:] if self.log.is_file() else ""
                raise BrowserError(f"Chromium closed its pipe (exit code {self.process.poll()}): {log}")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def call(self, method: str, session: str | None = None, **params) -> dict:
        """Send a command and wait for its answer; events that arrive meanwhile are kept in `events`."""
        number = self._command(method, session, **params)
        deadline = time.monotonic() + self.timeout
        while number not in self._replies:
            self._pump(deadline)
        answer = self._replies.pop(number)
        if "error" in answer:
            raise BrowserError(f"{method}: {answer['error']}")
        return answer.get("result", {})

    def _command(self, method: str, session: str | None = None, **params) -> int:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        self._write(message)
        return self._next_id

    def _pump(self, deadline: float) -> None:
        """Read one message: an answer is kept for its command, an event in `events`. A dialog (alert, confirm) is
        dismissed at once, so that a page that opens one is reported by the test instead of hanging it."""
        message = self._read(deadline)
        if "id" in message:
            self._replies[message["id"]] = message
            return
        self.events.append(message)
        if message["method"] == "Page.javascriptDialogOpening":
            self._command("Page.handleJavaScriptDialog", message.get("sessionId"), accept=False)

    def send(self, method: str, **params) -> dict:
        """A command to the page."""
        return self.call(method, self.session, **params)

    def wait_for(self, method: str, after: int = 0) -> dict:
        """The first event `method` at or after position `after` of `events`, waiting for it if need be."""
        deadline = time.monotonic() + self.timeout
        while True:
            for event in self.events[after:]:
                if event["method"] == method:
                    return event
            self._pump(deadline)

    # -- what the tests use --------------------------------------------------------------------------------------

    def open(self, path: Path, javascript: bool = True) -> None:
        """Load a file and wait for its load event; `events` then holds this page's events only."""
        self.events.clear()
        self.send("Emulation.setScriptExecutionDisabled", value=not javascript)
        mark = len(self.events)
        self.send("Page.navigate", url=Path(path).resolve().as_uri())
        self.wait_for("Page.loadEventFired", mark)

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (run by the protocol even when the page's scripts are
        disabled), as JSON."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression!r} raised {result['exceptionDetails']}")
        return result["result"].get("value")

    def click(self, selector: str) -> None:
        """A real mouse click (press and release) at the middle of the element."""
        box = self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.scrollIntoView({{block: 'center'}});"
            " const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    def choose(self, selector: str, value: str) -> None:
        """Pick an option of a <select> as a user would (the change event included)."""
        self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.value = {json.dumps(value)};"
            " e.dispatchEvent(new Event('change', {bubbles: true})); })()"
        )

    def screenshot(self, clip: tuple[int, int, int, int] | None = None) -> bytes:
        """The whole page as a PNG, or the part `clip` = (x, y, width, height) in page pixels."""
        params = {"format": "png", "captureBeyondViewport": True}
        if clip is not None:
            params["clip"] = dict(zip(("x", "y", "width", "height"), clip), scale=1)
        return base64.b64decode(self.send("Page.captureScreenshot", **params)["data"])

    def requested_urls(self) -> list[str]:
        return [event["params"]["request"]["url"] for event in self.events if event["method"] == "Network.requestWillBeSent"]

    def dialogs(self) -> list[dict]:
        return [event["params"] for event in self.events if event["method"] == "Page.javascriptDialogOpening"]

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (BrowserError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for fd in (self._commands, self._answers):
            os.close(fd)
