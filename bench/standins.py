#!/usr/bin/env python3
"""The benchmark's stand-ins, behaving on the wire like the services they
stand for (the tests use the stock ones; nothing here changes what they
answer):

  standins.py moto [moto_server's arguments: -H HOST -p PORT -c CERT -k KEY]
  standins.py vendor [scripts/vendor_standin.py's arguments]

- moto: stock moto_server answers every request with `Connection: close`
  (werkzeug's development server never keeps a connection alive), so each
  AWS call would open a new connection and, over TLS, make a new handshake.
  Secrets Manager keeps connections alive, and the SDK clients pool them:
  here a request with a Content-Length body is read whole before moto sees
  it, and the connection stays open for the next one (a chunked or
  `Expect: 100-continue` request still closes it, as before).
- both: TCP_NODELAY on the server's sockets. The stand-ins write a
  response's headers and body separately, and on a kept-alive connection
  Nagle's algorithm then holds the body until the client's delayed ACK
  (about 40 ms on Linux loopback): a stall of the stand-in, not of the
  client under test.
"""
import io
import os
import runpy
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def moto(argv):
    from moto import server
    from moto.moto_server.werkzeug_app import MotoRequestHandler

    class KeepAliveHandler(MotoRequestHandler):
        disable_nagle_algorithm = True
        _keep_alive = False

        def run_wsgi(self):
            chunked = "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()
            self._keep_alive = not chunked and not self.headers.get("Expect")
            if not self._keep_alive:
                return super().run_wsgi()
            # The whole body now; moto reads it from memory, and werkzeug's
            # drain after the response (written for closed connections)
            # finds nothing to read instead of eating the next request.
            length = int(self.headers.get("Content-Length") or 0)
            socket_file = self.rfile
            self.rfile = io.BytesIO(socket_file.read(length) if length > 0 else b"")
            try:
                return super().run_wsgi()
            finally:
                self.rfile = socket_file

        def send_header(self, keyword, value):
            if self._keep_alive and keyword.lower() == "connection" and value.lower() == "close":
                return
            super().send_header(keyword, value)

    server.MotoRequestHandler = KeepAliveHandler  # what server.main() hands run_simple
    return server.main(argv)


def vendor(argv):
    module = runpy.run_path(os.path.join(ROOT, "scripts/vendor_standin.py"), run_name="vendor_standin")
    module["Handler"].disable_nagle_algorithm = True
    return module["main"](argv)


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in ("moto", "vendor"):
        raise SystemExit(__doc__)
    sys.exit({"moto": moto, "vendor": vendor}[sys.argv[1]](sys.argv[2:]))
