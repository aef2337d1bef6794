"""What the project's loopback servers share: the port file, and serving
until SIGTERM or SIGINT.

Used by scripts/vendor_standin.py and scripts/aws_fault_proxy.py (standard
library only, like them).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import traceback
from typing import Callable, Optional


def write_port_file(path: str, port: int) -> None:
    """Writes the bound port atomically, so a reader never sees half of it."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(str(port))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def report_handler_error(name: str) -> None:
    """A server's handle_error: a client that went away is not an error;
    anything else is printed as its traceback frames and exception type only
    (an exception's message could quote request data: keys, tokens)."""
    exc = sys.exc_info()[1]
    if isinstance(exc, (ConnectionError, TimeoutError, socket.timeout, OSError)):
        return
    tb = "".join(traceback.format_tb(exc.__traceback__)) if exc else ""
    sys.stderr.write(f"{name}: handler error {type(exc).__name__}\n{tb}")
    sys.stderr.flush()


def serve(server, name: str, url: str, port_file: Optional[str],
          on_stop: Optional[Callable[[], None]] = None) -> int:
    """Writes the port file (when asked), prints one "NAME listening on URL"
    line, serves until SIGTERM or SIGINT, then stops the server. Returns the
    process's exit status."""
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    if port_file:
        try:
            write_port_file(port_file, server.server_address[1])
        except OSError as e:
            print(f"{name}: cannot write port file: {e}", file=sys.stderr)
            server.server_close()
            return 1

    print(f"{name} listening on {url}", flush=True)
    serve_thread = threading.Thread(target=server.serve_forever,
                                    kwargs={"poll_interval": 0.2}, daemon=True)
    serve_thread.start()
    try:
        while not stop.is_set():
            stop.wait(0.5)
    finally:
        if on_stop is not None:
            on_stop()
        server.shutdown()
        server.server_close()
    return 0
