#!/usr/bin/python3
"""SMTP sink for Echelon's development server and test suites.

Accepts mail on a loopback address and stores every message it accepts as
one file in a Maildir (new/), with the SMTP envelope added as headers:

    X-Echelon-Envelope-From: <sender>
    X-Echelon-Envelope-To: <recipient>      (one line per accepted recipient)
    X-Echelon-Connection: <n>               (the connection's serial number)
    X-Echelon-Auth: <user>                  (with --auth: who logged in)

With --auth USER:PASSWORD, AUTH (PLAIN or LOGIN) with those credentials is
required before MAIL; plain text is allowed, the sink being on loopback.

With --test-rules, recipients are refused by the start of their local part:

    reject...@   550 5.1.1 <addr>: Recipient address rejected: test rule
    tempfail...@ 451 4.3.0 <addr>: Try again later: test rule

and a message to one of these is stored, then its connection ends:

    hangup...@   closed at once after the reply to the message
    expire...@   the next MAIL FROM on it gets 421, then it is closed (as
                 a server does whose idle timeout ran out)

Runs with Debian's /usr/bin/python3 (package python3-aiosmtpd). Writes its
pid file, if asked, once it is listening; exits 0 on SIGTERM or SIGINT.
"""

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
import time

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

LOG = logging.getLogger("smtp_sink")
SERVER_NAME = "echelon-smtp-sink.localhost"


class MaildirHandler:
    """aiosmtpd handler: applies the test rules, stores into a Maildir."""

    def __init__(self, maildir, test_rules):
        self.maildir = maildir
        self.test_rules = test_rules
        self.count = 0
        self.connections = 0
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(maildir, sub), exist_ok=True)

    async def handle_RCPT(self, server, session, envelope, address,
                          rcpt_options):
        local = address.rsplit("@", 1)[0].lower()
        if self.test_rules and local.startswith("reject"):
            LOG.info("RCPT %s refused (550, test rule)", address)
            return ("550 5.1.1 <%s>: Recipient address rejected: test rule"
                    % address)
        if self.test_rules and local.startswith("tempfail"):
            LOG.info("RCPT %s deferred (451, test rule)", address)
            return "451 4.3.0 <%s>: Try again later: test rule" % address
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_MAIL(self, server, session, envelope, address,
                          mail_options):
        if getattr(session, "echelon_expire", False):
            LOG.info("MAIL %s refused (421, test rule), closing", address)
            asyncio.get_running_loop().call_soon(server.transport.close)
            return "421 4.4.2 %s Idle timeout: test rule" % SERVER_NAME
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if session.authenticated:
            envelope.echelon_user = session.auth_data.login.decode("utf-8",
                                                                   "replace")
        name = self.store(envelope, self.connection(session))
        LOG.info("stored %s from <%s> to %s", name, envelope.mail_from,
                 ", ".join("<%s>" % r for r in envelope.rcpt_tos))
        if self.rule(envelope, "hangup"):
            LOG.info("closing the connection (test rule)")
            asyncio.get_running_loop().call_soon(server.transport.close)
        if self.rule(envelope, "expire"):
            session.echelon_expire = True
        return "250 2.0.0 Ok: queued as %s" % name

    def rule(self, envelope, prefix):
        """Whether a test rule applies to a recipient of the message."""
        return self.test_rules and any(
            r.rsplit("@", 1)[0].lower().startswith(prefix)
            for r in envelope.rcpt_tos)

    def connection(self, session):
        """The serial number of a session's connection, from 1."""
        if not hasattr(session, "echelon_serial"):
            self.connections += 1
            session.echelon_serial = self.connections
        return session.echelon_serial

    def store(self, envelope, connection):
        """Write one message the Maildir way: tmp/ first, then new/."""
        self.count += 1
        name = "%d.M%dP%dQ%d.%s" % (time.time(), time.time_ns() % 1000000,
                                    os.getpid(), self.count, SERVER_NAME)
        head = ["X-Echelon-Envelope-From: <%s>" % envelope.mail_from]
        head += ["X-Echelon-Envelope-To: <%s>" % r for r in envelope.rcpt_tos]
        head += ["X-Echelon-Connection: %d" % connection]
        if getattr(envelope, "echelon_user", None):
            head += ["X-Echelon-Auth: %s" % envelope.echelon_user]
        body = envelope.original_content or b""
        data = ("\n".join(head) + "\n").encode("utf-8")
        data += body.replace(b"\r\n", b"\n")
        tmp = os.path.join(self.maildir, "tmp", name)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, os.path.join(self.maildir, "new", name))
        return name


def parse_args(argv):
    p = argparse.ArgumentParser(description="SMTP sink storing into a Maildir")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=2525,
                   help="port to listen on (default 2525)")
    p.add_argument("--maildir", required=True,
                   help="Maildir to store messages in (created if missing)")
    p.add_argument("--pidfile", help="write the pid here once listening")
    p.add_argument("--test-rules", action="store_true",
                   help="refuse reject*@ (550) and tempfail*@ (451); "
                        "close after hangup*@, 421 after expire*@")
    p.add_argument("--auth", metavar="USER:PASSWORD",
                   help="require AUTH with these credentials")
    p.add_argument("--quiet", action="store_true", help="log warnings only")
    return p.parse_args(argv)


async def serve(args):
    loop = asyncio.get_running_loop()
    handler = MaildirHandler(args.maildir, args.test_rules)

    auth = {}
    if args.auth:
        user, _, password = args.auth.partition(":")

        def check(server, session, envelope, mechanism, data):
            ok = (isinstance(data, LoginPassword)
                  and data.login == user.encode()
                  and data.password == password.encode())
            LOG.info("AUTH %s as %r: %s", mechanism,
                     getattr(data, "login", b""), "ok" if ok else "refused")
            return AuthResult(success=ok, handled=False, auth_data=data)

        auth = dict(authenticator=check, auth_required=True,
                    auth_require_tls=False)

    def factory():
        return SMTP(handler, hostname=SERVER_NAME, enable_SMTPUTF8=True,
                    ident="Echelon SMTP sink", **auth)

    server = await loop.create_server(factory, host=args.host, port=args.port,
                                      family=socket.AF_INET,
                                      reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    if args.pidfile:
        with open(args.pidfile, "w") as f:
            f.write("%d\n" % os.getpid())
    LOG.info("listening on %s:%d, Maildir %s%s", args.host, args.port,
             args.maildir, " (test rules on)" if args.test_rules else "")

    try:
        await stop.wait()
    finally:
        server.close()
        await server.wait_closed()
        if args.pidfile:
            try:
                os.unlink(args.pidfile)
            except FileNotFoundError:
                pass
        LOG.info("stopped")


def main(argv):
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="smtp-sink: %(message)s")
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    try:
        asyncio.run(serve(args))
    except OSError as e:
        LOG.error("cannot listen on %s:%d: %s", args.host, args.port, e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
