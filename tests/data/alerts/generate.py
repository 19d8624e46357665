"""Writes the alert mails in this folder (run it from anywhere: ``python generate.py``).

Each mail is what the tool's stock notification command produces, wrapped the way the
usual mail programs send it (Heirloom mailx, GNU mailutils, Monit's own SMTP client,
an RMM's HTML mailer). The .eml files are committed; this script documents how they were
made and keeps the sequences consistent. Formats, from the tools' shipped configuration:

- Nagios ``commands.cfg``: ``notify-service-by-email`` prints
  ``***** Nagios *****\\n\\nNotification Type: …\\n\\nService: …\\nHost: …\\nAddress: …\\n
  State: …\\n\\nDate/Time: …\\n\\nAdditional Info:\\n\\n$SERVICEOUTPUT$`` with the subject
  ``** $NOTIFICATIONTYPE$ Service Alert: $HOSTALIAS$/$SERVICEDESC$ is $SERVICESTATE$ **``;
  ``notify-host-by-email`` prints ``Host:``/``State:``/``Address:``/``Info:`` and
  ``** … Host Alert: $HOSTNAME$ is $HOSTSTATE$ **``.
- Icinga 1 ships the same commands with a ``***** Icinga *****`` banner.
- Icinga 2 ``mail-service-notification.sh``: subject
  ``[$NOTIFICATIONTYPE] $SERVICEDISPLAYNAME on $HOSTDISPLAYNAME is $SERVICESTATE!``, body
  ``***** Service Monitoring on $ICINGA2HOST *****``, headline, ``Info:``, ``When:``,
  ``Service:``, ``Host:``, ``IPv4:``; ``mail-host-notification.sh`` sends the subject
  ``[$NOTIFICATIONTYPE] Host $HOSTDISPLAYNAME is $HOSTSTATE!`` as a base64 encoded word.
- Monit's default ``mail-format``: subject ``monit alert --  $EVENT $SERVICE``, body
  ``$EVENT Service $SERVICE`` then tab-indented ``Date:``, ``Action:``, ``Host:``,
  ``Description:`` and ``Your faithful employee,\\nMonit``; sent with CRLF line ends.
"""

from __future__ import annotations

import base64
import quopri
from pathlib import Path

HERE = Path(__file__).parent


def write(name: str, headers: list[tuple[str, str]], body: bytes, *, crlf: bool = False) -> None:
    head = "".join(f"{k}: {v}\n" for k, v in headers).encode()
    raw = head + b"\n" + body
    if crlf:
        raw = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    path = HERE / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw)


def mailx_headers(sender: str, subject: str, date: str, mid: str, *, cte: str = "7bit",
                  charset: str = "us-ascii", ctype: str = "text/plain") -> list[tuple[str, str]]:
    address = sender.rpartition("<")[2].rstrip(">")
    return [
        ("Return-Path", f"<{address}>"),
        ("Received", f"by mon.acme-msp.example (Postfix, from userid 998) id {mid[:8]}; {date}"),
        ("Date", date),
        ("To", "support@msp.example"),
        ("Subject", subject),
        ("User-Agent", "Heirloom mailx 12.5 7/5/10"),
        ("MIME-Version", "1.0"),
        ("Content-Type", f"{ctype}; charset={charset}"),
        ("Content-Transfer-Encoding", cte),
        ("Message-Id", f"<{mid}@mon.acme-msp.example>"),
        ("From", sender),
    ]


# -- Nagios ---------------------------------------------------------------------------

def nagios_service(kind: str, state: str, when: str, output: str) -> str:
    return (
        "***** Nagios *****\n\n"
        f"Notification Type: {kind}\n\n"
        "Service: HTTP\nHost: acme-web01\nAddress: 192.0.2.10\n"
        f"State: {state}\n\n"
        f"Date/Time: {when}\n\n"
        f"Additional Info:\n\n{output}\n"
    )


def nagios() -> None:
    nag = "Nagios Monitoring <nagios@mon.acme-msp.example>"
    steps = [
        ("1-problem", "PROBLEM", "CRITICAL", "Sat Nov 28 10:00:00 UTC 2026",
         "Sat, 28 Nov 2026 10:00:02 +0000",
         "CRITICAL - Socket timeout after 10 seconds"),
        ("2-repeat", "PROBLEM", "CRITICAL", "Sat Nov 28 10:30:00 UTC 2026",
         "Sat, 28 Nov 2026 10:30:02 +0000",
         "CRITICAL - Socket timeout after 10 seconds \u2265 warn threshold"),
        ("3-recovery", "RECOVERY", "OK", "Sat Nov 28 10:45:00 UTC 2026",
         "Sat, 28 Nov 2026 10:45:01 +0000",
         "HTTP OK: HTTP/1.1 200 OK - 10543 bytes in 0.112 second response time"),
        ("4-problem-again", "PROBLEM", "WARNING", "Sat Nov 28 11:30:00 UTC 2026",
         "Sat, 28 Nov 2026 11:30:03 +0000",
         "HTTP WARNING: HTTP/1.1 200 OK - 10543 bytes in 4.020 second response time"),
    ]
    for step, kind, state, when, date, output in steps:
        subject = f"** {kind} Service Alert: acme-web01/HTTP is {state} **"
        body = nagios_service(kind, state, when, output)
        mid = f"20261128{when[11:19].replace(':', '')}.nagios.http.{step}"
        if step == "2-repeat":  # non-ASCII plugin output: mailx sends it quoted-printable
            hdr = mailx_headers(nag, subject, date, mid, cte="quoted-printable", charset="utf-8")
            write(f"nagios/service-{step}.eml", hdr, quopri.encodestring(body.encode()))
        elif step == "4-problem-again":  # an HTML template, as many sites configure
            html = (
                "<html><body><h2>***** Nagios *****</h2><table>"
                f"<tr><td>Notification Type:</td><td>{kind}</td></tr>"
                "<tr><td>Service:</td><td>HTTP</td></tr>"
                "<tr><td>Host:</td><td>acme-web01</td></tr>"
                "<tr><td>Address:</td><td>192.0.2.10</td></tr>"
                f"<tr><td>State:</td><td>{state}</td></tr>"
                f"<tr><td>Date/Time:</td><td>{when}</td></tr>"
                f"<tr><td>Additional Info:</td><td>{output}</td></tr>"
                "</table></body></html>\n"
            )
            hdr = mailx_headers(nag, subject, date, mid, ctype="text/html")
            write(f"nagios/service-{step}.eml", hdr, html.encode())
        else:
            write(f"nagios/service-{step}.eml", mailx_headers(nag, subject, date, mid),
                  body.encode())
    host_steps = [
        ("1-problem", "PROBLEM", "DOWN", "Sat Nov 28 09:00:00 UTC 2026",
         "CRITICAL - Host Unreachable (192.0.2.1)"),
        ("2-repeat", "PROBLEM", "DOWN", "Sat Nov 28 09:30:00 UTC 2026",
         "CRITICAL - Host Unreachable (192.0.2.1)"),
        ("3-recovery", "RECOVERY", "UP", "Sat Nov 28 09:41:00 UTC 2026",
         "PING OK - Packet loss = 0%, RTA = 0.61 ms"),
        ("4-problem-again", "PROBLEM", "DOWN", "Sun Nov 29 02:12:00 UTC 2026",
         "CRITICAL - Time to live exceeded (192.0.2.1)"),
    ]
    for step, kind, state, when, output in host_steps:
        body = (
            "***** Nagios *****\n\n"
            f"Notification Type: {kind}\n"
            f"Host: acme-fw01\nState: {state}\nAddress: 192.0.2.1\nInfo: {output}\n\n"
            f"Date/Time: {when}\n"
        )
        date = f"{when[:3]}, {when[8:10]} Nov 2026 {when[11:19]} +0000"
        mid = f"2026{when[8:10]}{when[11:19].replace(':', '')}.nagios.fw01.{step}"
        subject = f"** {kind} Host Alert: acme-fw01 is {state} **"
        write(f"nagios/host-{step}.eml", mailx_headers(nag, subject, date, mid), body.encode())


# -- Icinga 1 --------------------------------------------------------------------------

def icinga1() -> None:
    sender = "icinga@mon.globex.example"
    steps = [
        ("1-problem", "PROBLEM", "CRITICAL", "2026-11-28 08:15:00",
         "CRITICAL - Slave is 1520 seconds behind master"),
        ("2-repeat", "PROBLEM", "CRITICAL", "2026-11-28 09:15:00",
         "CRITICAL - Slave is 5121 seconds behind master"),
        ("3-recovery", "RECOVERY", "OK", "2026-11-28 09:40:00",
         "OK - Slave is 0 seconds behind master"),
        ("4-problem-again", "PROBLEM", "UNKNOWN", "2026-11-28 12:05:00",
         "UNKNOWN - Cannot connect to MySQL on 198.51.100.7"),
    ]
    for step, kind, state, when, output in steps:
        # Icinga 1's sample commands.cfg: LONGDATETIME in ISO form (date_format=iso8601)
        body = (
            "***** Icinga *****\n\n"
            f"Notification Type: {kind}\n\n"
            "Service: MySQL Replication\nHost: globex-db01\nAddress: 198.51.100.7\n"
            f"State: {state}\n\nDate/Time: {when}\n\nAdditional Info:\n\n{output}\n"
        )
        subject = f"** {kind} Service Alert: globex-db01/MySQL Replication is {state} **"
        date = f"Sat, 28 Nov 2026 {when[11:]} +0100"
        mid = f"icinga1.{step}.{when[11:].replace(':', '')}"
        write(f"icinga1/service-{step}.eml", mailx_headers(sender, subject, date, mid),
              body.encode())


# -- Icinga 2 --------------------------------------------------------------------------

def mailutils_headers(sender: str, subject: str, date: str, mid: str) -> list[tuple[str, str]]:
    return [
        ("Return-Path", f"<{sender}>"),
        ("From", sender),
        ("To", "support@msp.example"),
        ("Subject", subject),
        ("MIME-Version", "1.0"),
        ("Content-Type", "text/plain; charset=UTF-8"),
        ("Content-Transfer-Encoding", "quoted-printable"),
        ("Date", date),
        ("Message-Id", f"<{mid}@icinga-master.initech.example>"),
        ("X-Mailer", "mail (GNU Mailutils 3.15)"),
    ]


def icinga2() -> None:
    sender = "icinga@icinga-master.initech.example"
    steps = [
        ("1-problem", "PROBLEM", "CRITICAL", "2026-11-28 07:00:00 +0000",
         "connect to address 203.0.113.25 and port 25: Connection refused"),
        ("2-repeat", "PROBLEM", "CRITICAL", "2026-11-28 07:30:00 +0000",
         "connect to address 203.0.113.25 and port 25: Connection refused"),
        ("3-recovery", "RECOVERY", "OK", "2026-11-28 07:52:00 +0000",
         "SMTP OK - 0,021 sec. response time \u2013 Gr\u00fc\u00dfe vom Postfix"),
        ("4-problem-again", "PROBLEM", "WARNING", "2026-11-28 13:10:00 +0000",
         "SMTP WARNING - 3,518 sec. response time"),
    ]
    for step, kind, state, when, output in steps:
        body = (
            "***** Service Monitoring on icinga-master *****\n\n"
            f"SMTP on Initech Mail 01 is {state}!\n\n"
            f"Info:    {output}\n\n"
            f"When:    {when}\nService: smtp\nHost:    initech-mail01\nIPv4:    203.0.113.25\n"
        )
        if step == "2-repeat":
            body += "\nComment by icingaadmin:\n  Escalated to the mail team\n"
        subject = f"[{kind}] SMTP on Initech Mail 01 is {state}!"
        date = f"Sat, 28 Nov 2026 {when[11:19]} +0000"
        mid = f"icinga2.smtp.{step}"
        write(f"icinga2/service-{step}.eml", mailutils_headers(sender, subject, date, mid),
              quopri.encodestring(body.encode()))
    host_steps = [
        ("1-problem", "PROBLEM", "DOWN", "2026-11-28 06:00:00 +0000",
         "CRITICAL - Host Unreachable (203.0.113.40)"),
        ("2-repeat", "PROBLEM", "DOWN", "2026-11-28 06:30:00 +0000",
         "CRITICAL - Host Unreachable (203.0.113.40)"),
        ("3-recovery", "RECOVERY", "UP", "2026-11-28 06:44:00 +0000",
         "PING OK - Packet loss = 0%, RTA = 1.02 ms"),
        ("4-problem-again", "PROBLEM", "DOWN", "2026-11-28 19:20:00 +0000",
         "CRITICAL - Host Unreachable (203.0.113.40)"),
    ]
    for step, kind, state, when, output in host_steps:
        body = (
            "***** Host Monitoring on icinga-master *****\n\n"
            f"initech-nas01 is {state}!\n\n"
            f"Info:    {output}\n\n"
            f"When:    {when}\nHost:    initech-nas01\nIPv4:\t 203.0.113.40\n"
        )
        # the script base64-encodes the subject as an RFC 2047 word (with bash's "\n")
        encoded = base64.b64encode(f"[{kind}] Host initech-nas01 is {state}!\n".encode())
        subject = f"=?utf-8?B?{encoded.decode()}?="
        date = f"Sat, 28 Nov 2026 {when[11:19]} +0000"
        mid = f"icinga2.nas01.{step}"
        write(f"icinga2/host-{step}.eml", mailutils_headers(sender, subject, date, mid),
              quopri.encodestring(body.encode()))


# -- Monit -----------------------------------------------------------------------------

def monit() -> None:
    steps = [
        ("1-problem", "Does not exist", "restart", "process is not running"),
        ("2-repeat", "Does not exist", "restart", "process is not running"),
        ("3-recovery", "Exists", "alert", "process is running with pid 41822"),
        ("4-problem-again", "Connection failed", "restart",
         "failed protocol test [HTTP] at [localhost]:80 [TCP/IP] -- HTTP: Error receiving data"),
        ("5-action-done", "Action done", "alert", "restart action done"),
    ]
    times = ["10:05:12", "10:06:12", "10:07:12", "15:40:00", "15:41:30"]
    for (step, event, action, description), t in zip(steps, times, strict=True):
        body = (
            f"{event} Service nginx \r\n\r\n"
            f"\tDate:        Sat, 28 Nov 2026 {t}\r\n"
            f"\tAction:      {action}\r\n"
            "\tHost:        web02.acme.example\r\n"
            f"\tDescription: {description}\r\n\r\n"
            "Your faithful employee,\r\nMonit\r\n"
        )
        headers = [
            ("Return-Path", "<monit@web02.acme.example>"),
            ("Date", f"Sat, 28 Nov 2026 {t} +0000"),
            ("From", "monit@web02.acme.example"),
            ("To", "support@msp.example"),
            ("Subject", f"monit alert --  {event} nginx"),
            ("Message-ID", f"<1764324312.{step}.nginx@web02.acme.example>"),
            ("X-Mailer", "Monit 5.33.0"),
            ("MIME-Version", "1.0"),
            ("Content-Type", "text/plain; charset=\"UTF-8\""),
            ("Content-Transfer-Encoding", "8bit"),
        ]
        write(f"monit/nginx-{step}.eml", headers, body.encode(), crlf=True)


# -- RMM-style tools (formats of our own design, like N-able / Datto mails) -------------

def rmm_nable() -> None:
    """One alert id per problem; the parser plugin in tests/plugin_pkg reads it."""
    steps = [
        ("1-problem", "Failed", "88412", "10:00", "Free space 3.1 GB (4%) below 10%"),
        ("2-repeat", "Failed", "88412", "11:00", "Free space 2.7 GB (3%) below 10%"),
        ("3-recovery", "Normal", "88412", "11:20", "Free space 41.9 GB (52%)"),
        ("4-problem-again", "Failed", "90107", "16:45", "Free space 4.0 GB (5%) below 10%"),
    ]
    for step, status, alert_id, t, detail in steps:
        subject = f"Alert: Disk Space C: on ACME-SRV01 (Client: ACME-001) - {status}"
        text = (
            f"Device: ACME-SRV01\nClient: ACME-001\nSite: Head Office\n"
            f"Check: Disk Space C:\nStatus: {status}\nAlert ID: {alert_id}\n"
            f"Time: 2026-11-28 {t}:00 UTC\n\nDetails: {detail}\n"
        )
        html = (
            "<html><body><table>"
            + "".join(
                f"<tr><th>{k}</th><td>{v}</td></tr>"
                for k, v in (line.split(": ", 1) for line in text.splitlines() if ": " in line)
            )
            + "</table></body></html>"
        )
        boundary = f"==rmm-{step}=="
        body = (
            f"--{boundary}\nContent-Type: text/plain; charset=utf-8\n"
            f"Content-Transfer-Encoding: quoted-printable\n\n"
            + quopri.encodestring(text.encode()).decode()
            + f"\n--{boundary}\nContent-Type: text/html; charset=utf-8\n"
            "Content-Transfer-Encoding: quoted-printable\n\n"
            + quopri.encodestring(html.encode()).decode()
            + f"\n--{boundary}--\n"
        )
        headers = [
            ("From", "N-sight Alerts <alerts@rmm-nable.example>"),
            ("To", "support@msp.example"),
            ("Subject", subject),
            ("Date", f"Sat, 28 Nov 2026 {t}:05 +0000"),
            ("Message-ID", f"<alert-{alert_id}-{step}@rmm-nable.example>"),
            ("MIME-Version", "1.0"),
            ("Content-Type", f'multipart/alternative; boundary="{boundary}"'),
        ]
        write(f"rmm-nable/disk-{step}.eml", headers, body.encode())


def rmm_datto() -> None:
    """No alert id: correlated by a detection rule's key_regex (see the how-to)."""
    steps = [
        ("1-problem", "raised", "08:00", "CPU usage 97% for 15 minutes"),
        ("2-repeat", "raised", "08:15", "CPU usage 99% for 30 minutes"),
        ("3-recovery", "resolved", "08:40", "CPU usage back to 12%"),
        ("4-problem-again", "raised", "14:00", "CPU usage 95% for 15 minutes"),
    ]
    for step, verb, t, detail in steps:
        subject = f"Alert {verb}: CPU Monitor on ACME-WS17 [Site: ACME-002]"
        body = (
            f"The following alert was {verb} at 2026-11-28 {t} UTC.\n\n"
            "Site: ACME-002 (Acme Corp - Branch)\nDevice: ACME-WS17\n"
            f"Monitor: CPU Monitor\nPriority: High\nDetails: {detail}\n\n"
            "-- \nThis mail was sent by the RMM platform. Do not reply.\n"
        )
        headers = [
            ("From", "RMM Platform <noreply@rmm-datto.example>"),
            ("To", "support@msp.example"),
            ("Subject", subject),
            ("Date", f"Sat, 28 Nov 2026 {t}:10 +0000"),
            ("Message-ID", f"<cpu-ws17-{step}@rmm-datto.example>"),
            ("Auto-Submitted", "auto-generated"),
            ("MIME-Version", "1.0"),
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Transfer-Encoding", "7bit"),
        ]
        write(f"rmm-datto/cpu-{step}.eml", headers, body.encode())
    # a self-healed notice the skip rules must forward instead of ticketing
    headers = [
        ("From", "RMM Platform <noreply@rmm-datto.example>"),
        ("To", "support@msp.example"),
        ("Subject", "Alert raised: Service Monitor on ACME-WS17 [Site: ACME-002] - Self Healed"),
        ("Date", "Sat, 28 Nov 2026 09:00:10 +0000"),
        ("Message-ID", "<svc-ws17-selfhealed@rmm-datto.example>"),
        ("Auto-Submitted", "auto-generated"),
        ("MIME-Version", "1.0"),
        ("Content-Type", "text/plain; charset=utf-8"),
    ]
    write("rmm-datto/service-self-healed.eml", headers,
          b"Spooler service stopped and was restarted automatically.\n\nSite: ACME-002\n")


if __name__ == "__main__":
    nagios()
    icinga1()
    icinga2()
    monit()
    rmm_nable()
    rmm_datto()
