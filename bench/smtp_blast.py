#!/usr/bin/python3
"""The SMTP sink's own limit (the anchor of item 3's SMTP half).

Sends the same message COUNT times to an SMTP server on 127.0.0.1 over
CONNECTIONS connections (each reused for its share, as a mail client
would), and prints the messages per second the server accepted.

    bench/smtp_blast.py PORT MESSAGE_FILE COUNT CONNECTIONS

MESSAGE_FILE is one message the scheduler delivered, taken from the sink's
Maildir; its X-Echelon-Envelope-* lines (added by the sink) are dropped
and its envelope reused.
"""

import smtplib
import sys
import threading
import time


def read_message(path):
    sender, rcpt, lines = None, None, []
    with open(path, "rb") as f:
        for line in f.read().split(b"\n"):
            if line.startswith(b"X-Echelon-Envelope-From: "):
                sender = line.split(b"<", 1)[1].rstrip(b">").decode()
            elif line.startswith(b"X-Echelon-Envelope-To: "):
                rcpt = line.split(b"<", 1)[1].rstrip(b">").decode()
            else:
                lines.append(line)
    return sender, rcpt, b"\r\n".join(lines)


def main(argv):
    port, path = int(argv[1]), argv[2]
    count, connections = int(argv[3]), int(argv[4])
    sender, rcpt, message = read_message(path)
    errors = []

    def worker(n):
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
                for _ in range(n):
                    s.sendmail(sender, [rcpt], message)
        except Exception as e:  # reported, and the run is void
            errors.append(repr(e))

    share = [count // connections + (1 if i < count % connections else 0)
             for i in range(connections)]
    threads = [threading.Thread(target=worker, args=(n,)) for n in share]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start

    print("messages: %d over %d connections, %d bytes each"
          % (count, connections, len(message)))
    print("errors: %d %s" % (len(errors), "; ".join(errors[:3])))
    print("seconds: %.3f" % elapsed)
    print("messages/s: %.1f" % (count / elapsed))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
