"""The SMTP intake's benchmark (part of bench/harness.py): messages of 4 KB over loopback,
8 connections at once, sent by the same client (bench/smtp_load.py, Python's smtplib) to

  - comms-archiver's intake (`run` with an [intake] and a local stage), which answers 250
    once a message and its acceptance record are synced to disk, and
  - OpenSMTPD (Debian's opensmtpd) with its defaults, delivering into a Maildir: it answers
    250 once the message is in its queue, and delivers it into the Maildir afterwards.

Rounds alternate the two servers (the machine is shared); the median of each is reported.
Afterwards comms-archiver's intake is checked: every acknowledged message is kept, listed in
an acceptance record with the SHA-256 of what is kept.
"""

import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

RCPT = "o2-archive@archive.contoso.com"
COUNT = int(os.environ.get("BENCH_SMTP_MESSAGES", "4000"))
BYTES = 4096
CONNECTIONS = 8
ROUNDS = int(os.environ.get("BENCH_SMTP_ROUNDS", "3"))
PEER_USER = "comms-archiver-bench"


def load(root, port):
    out = subprocess.run([sys.executable, str(root / "bench/smtp_load.py"), str(port), RCPT,
                          str(COUNT), str(BYTES), str(CONNECTIONS)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"bench: the SMTP load failed: {out.stderr or out.stdout}")
    return json.loads(out.stdout)


def ours(root, release, work, port, free_port, wait_listening):
    work.mkdir(parents=True)
    shutil.copytree(root / "config", work / "config")
    text = (root / "config/demo-smtp.toml").read_text()
    text = text.replace('listen = "127.0.0.1:2525"', f'listen = "127.0.0.1:{port}"')
    text = text.replace('"var/smtp/', '"var/')
    (work / "config/bench.toml").write_text(text)
    log = open(work / "run.log", "wb")
    proc = subprocess.Popen([str(release / "comms-archiver"), "run", "--config", "config/bench.toml"],
                            cwd=work, stdout=log, stderr=subprocess.STDOUT)
    wait_listening(port, "comms-archiver's intake")
    time.sleep(1)  # the daemon's first wake (empty days) is over
    result = load(root, port)
    os.kill(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)
    log.close()
    # Every acknowledged message is kept and recorded with the SHA-256 of what is kept.
    day = work / "var/stage/intake/o2/2026-11-20"
    recorded = {}
    for record in (day / "accepted").iterdir():
        for entry in json.loads(record.read_text())["accepted"]:
            recorded[entry["key"]] = entry["sha256"]
    kept = {p.stem: hashlib.sha256(p.read_bytes()).hexdigest() for p in (day / "messages").iterdir()
            if not p.name.startswith(".")}
    if len(kept) != COUNT or kept != recorded:
        sys.exit(f"bench: the intake kept {len(kept)} and recorded {len(recorded)} of {COUNT}")
    result["records"] = len(list((day / "accepted").iterdir()))
    return result


def peer(root, work, port, wait_listening):
    work.mkdir(parents=True)
    maildir = work / "Maildir"
    maildir.mkdir()
    shutil.chown(maildir, PEER_USER)
    conf = work / "smtpd.conf"
    conf.write_text(
        f"smtp limit max-mails 1000000 max-rcpt 1000\n"
        f"listen on 127.0.0.1 port {port}\n"
        f'table vusers {{ "@" = "{PEER_USER}" }}\n'
        f'action "maildir" maildir "{maildir}" virtual <vusers>\n'
        f'match from any for any action "maildir"\n')
    log = open(work / "smtpd.log", "wb")
    proc = subprocess.Popen(["smtpd", "-d", "-f", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    wait_listening(port, "OpenSMTPD")
    time.sleep(1)
    started = time.monotonic()
    result = load(root, port)
    deadline = time.monotonic() + 600
    while len(list((maildir / "new").iterdir()) if (maildir / "new").exists() else []) < COUNT:
        if time.monotonic() > deadline:
            sys.exit("bench: OpenSMTPD did not deliver every message into the Maildir")
        time.sleep(0.05)
    result["delivered_s"] = round(time.monotonic() - started, 3)
    os.kill(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)
    log.close()
    return result


def run(root, release, scratch, free_port, wait_listening):
    if subprocess.run(["id", PEER_USER], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        PEER_USER], check=True)
    runs = {"ours": [], "peer": []}
    base = scratch / "smtp"
    shutil.rmtree(base, ignore_errors=True)
    for i in range(ROUNDS):
        runs["peer"].append(peer(root, base / f"peer-{i}", free_port(), wait_listening))
        runs["ours"].append(ours(root, release, base / f"ours-{i}", free_port(), free_port, wait_listening))
        print(f"smtp round {i + 1}: comms-archiver {runs['ours'][-1]['seconds']} s, "
              f"OpenSMTPD {runs['peer'][-1]['seconds']} s")
    shutil.rmtree(base, ignore_errors=True)
    median = {k: statistics.median(r["seconds"] for r in v) for k, v in runs.items()}
    return {
        "messages": COUNT, "bytes": BYTES, "connections": CONNECTIONS, "rounds": ROUNDS,
        "ours_s": median["ours"], "peer_s": median["peer"],
        "peer_delivered_s": statistics.median(r["delivered_s"] for r in runs["peer"]),
        "records": statistics.median(r["records"] for r in runs["ours"]),
        "all": runs,
    }


def section(smtp, peer_version):
    ours_rate = smtp["messages"] / smtp["ours_s"]
    peer_rate = smtp["messages"] / smtp["peer_s"]
    lines = [
        "## SMTP intake against OpenSMTPD\n",
        f"{smtp['messages']:,} messages of {smtp['bytes']:,} bytes over loopback, {smtp['connections']} "
        "connections at once, sent by the same client (bench/smtp_load.py: Python's smtplib, one "
        "session per connection) to each server in turn; median of "
        f"{smtp['rounds']} alternating rounds. comms-archiver (`run`, local stage) answers 250 once "
        "the message file and its directory are synced and the message is listed in an acceptance "
        "record, itself synced (one record per group commit); "
        f"{peer_version} answers 250 once the message is in its queue, with its defaults, and "
        "delivers it into a Maildir afterwards. After each comms-archiver round the harness checks "
        "that every acknowledged message is kept and recorded with the SHA-256 of what is kept.\n",
        "| server | until the last 250 | messages per second | until in the Maildir |",
        "|---|---|---|---|",
        f"| comms-archiver intake | {smtp['ours_s']:.1f} s | {ours_rate:,.0f} | (kept at 250; "
        f"{smtp['records']:,.0f} acceptance records) |",
        f"| OpenSMTPD | {smtp['peer_s']:.1f} s | {peer_rate:,.0f} | {smtp['peer_delivered_s']:.1f} s |",
        "",
        f"comms-archiver / OpenSMTPD, messages per second: **{ours_rate / peer_rate:.2f}x** "
        "(target: at least 1.5x).\n",
    ]
    return "\n".join(lines)
