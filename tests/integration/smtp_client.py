"""An SMTP client for the intake's tests, independent of ours: Python's smtplib, and raw
sockets where a client must misbehave. Prints one JSON line per message with the reply.

  smtp_client.py send PORT RCPT FILE...            each file as one message
  smtp_client.py concurrent PORT RCPT N TEMPLATE   N connections at once, TEMPLATE's
                                                   {n} replaced per message
  smtp_client.py raw PORT                          stdin sent as is, replies printed
Options (send, concurrent): --starttls CA.pem, --cert CERT.pem KEY.pem, --auth USER PASS
"""
import json
import smtplib
import socket
import ssl
import sys
import threading


def connect(port, opts):
    client = smtplib.SMTP("127.0.0.1", port, timeout=60)
    client.ehlo("sender.test")
    if "starttls" in opts:
        context = ssl.create_default_context(cafile=opts["starttls"])
        context.check_hostname = False
        if "cert" in opts:
            context.load_cert_chain(*opts["cert"])
        client.starttls(context=context)
        client.ehlo("sender.test")
    if "auth" in opts:
        client.login(*opts["auth"])
    return client


def send_one(client, rcpt, data):
    try:
        refused = client.sendmail("archive@telemessage.example", [rcpt], data)
        return {"code": 250, "refused": list(refused)}
    except smtplib.SMTPResponseException as e:
        return {"code": e.smtp_code, "text": e.smtp_error.decode(errors="replace")}
    except smtplib.SMTPRecipientsRefused as e:
        code, text = list(e.recipients.values())[0]
        return {"code": code, "text": text.decode(errors="replace")}


def options(args):
    opts, rest, i = {}, [], 0
    while i < len(args):
        if args[i] == "--starttls":
            opts["starttls"] = args[i + 1]
            i += 2
        elif args[i] == "--cert":
            opts["cert"] = (args[i + 1], args[i + 2])
            i += 3
        elif args[i] == "--auth":
            opts["auth"] = (args[i + 1], args[i + 2])
            i += 3
        else:
            rest.append(args[i])
            i += 1
    return opts, rest


def main():
    command, args = sys.argv[1], sys.argv[2:]
    if command == "raw":
        sock = socket.create_connection(("127.0.0.1", int(args[0])), timeout=30)
        sock.sendall(sys.stdin.buffer.read())
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        sys.stdout.write(received.decode(errors="replace"))
        return
    opts, rest = options(args)
    port, rcpt = int(rest[0]), rest[1]
    if command == "send":
        try:
            client = connect(port, opts)
        except (smtplib.SMTPException, ssl.SSLError, OSError) as e:
            print(json.dumps({"connect": str(e)}))
            return
        for path in rest[2:]:
            with open(path, "rb") as f:
                print(json.dumps(send_one(client, rcpt, f.read())), flush=True)
        client.quit()
    elif command == "concurrent":
        n, template = int(rest[2]), open(rest[3], "rb").read()
        results = [None] * n
        barrier = threading.Barrier(n)

        def worker(i):
            client = connect(port, opts)
            barrier.wait()
            results[i] = send_one(client, rcpt, template.replace(b"{n}", str(i).encode()))
            client.quit()

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for r in results:
            print(json.dumps(r))


main()
