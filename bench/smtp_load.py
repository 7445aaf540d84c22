"""A load of TeleMessage-like SMS messages sent over SMTP, the same for every server measured:
COUNT messages of about BYTES each, over CONNECTIONS connections at once (each a session of
Python's smtplib sending its share one after the other). Prints one JSON line: messages
sent (every one answered 250), bytes, seconds.

  smtp_load.py PORT RCPT COUNT BYTES CONNECTIONS [PREFIX]
"""
import json
import smtplib
import sys
import threading
import time

port, rcpt, count, size, connections = (int(sys.argv[1]), sys.argv[2], int(sys.argv[3]),
                                        int(sys.argv[4]), int(sys.argv[5]))
prefix = sys.argv[6] if len(sys.argv) > 6 else "TM-LOAD"
LINE = b"Markets open in an hour; the desk is ready for the call with the client.\r\n"


def message(n):
    seconds = n % 86400
    head = (
        'From: "447700900101" <alice.smith@contoso.com>\r\n'
        'To: "447700900555" <447700900555@sms.telemessage.example>\r\n'
        f"Date: Fri, 20 Nov 2026 {seconds // 3600:02}:{seconds // 60 % 60:02}:{seconds % 60:02} +0000\r\n"
        f"Message-ID: <{prefix}-{n}@telemessage.example>\r\nSubject: SMS message\r\n"
        f"X-TELEMESSAGE-ArchiveMessageID: {prefix}-{n}\r\n"
        "X-TELEMESSAGE-ArchiveInitiator: 447700900101\r\nX-TELEMESSAGE-MessageType: SMS\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    ).encode()
    body = LINE * max(1, (size - len(head)) // len(LINE))
    return head + body


messages = [message(n) for n in range(count)]
shares = [messages[i::connections] for i in range(connections)]
failures = []
barrier = threading.Barrier(connections + 1)


def sender(share):
    client = smtplib.SMTP("127.0.0.1", port, timeout=120)
    client.ehlo("sender.test")
    barrier.wait()
    try:
        for data in share:
            client.sendmail("archive@telemessage.example", [rcpt], data)
    except smtplib.SMTPException as e:
        failures.append(str(e))
    client.quit()


threads = [threading.Thread(target=sender, args=(share,)) for share in shares]
for t in threads:
    t.start()
barrier.wait()
started = time.monotonic()
for t in threads:
    t.join()
seconds = time.monotonic() - started
if failures:
    sys.exit(f"refused: {failures[0]}")
print(json.dumps({"sent": count, "bytes": sum(map(len, messages)), "seconds": round(seconds, 3),
                  "connections": connections}))
