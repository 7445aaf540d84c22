//! Dovecot (Debian package dovecot-imapd) as a real IMAP server for the tests: a throwaway
//! configuration on 127.0.0.1 and a free port, login processes as dovenull, mail as
//! dovecot, stopped by pid. An independent client (Python's imaplib) reads the result back.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const PASSWORD: &str = "imap-test-password";

/// A running Dovecot, stopped when dropped.
pub struct Dovecot {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
}

fn id(flag: &str, user: &str) -> u32 {
    let out = Command::new("id")
        .args([flag, user])
        .output()
        .expect("id runs");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("the dovecot user exists (apt-get install dovecot-imapd)")
}

impl Dovecot {
    /// Starts Dovecot; with `tokeninfo`, XOAUTH2 is checked against that URL (a token is
    /// good for every mailbox of the domain the token info names, like an app-only token).
    pub fn start(dir: &Path, tokeninfo: Option<&str>) -> Dovecot {
        use std::os::unix::fs::PermissionsExt;
        let port = crate::support::free_port();
        let dir = dir.join("dovecot");
        let mail = dir.join("mail");
        std::fs::create_dir_all(dir.join("run")).unwrap();
        std::fs::create_dir_all(&mail).unwrap();
        // Dovecot's unprivileged processes must reach the mail directory.
        let mut up = Some(dir.as_path());
        while let Some(p) = up {
            if p == Path::new("/") || p == Path::new("/tmp") {
                break;
            }
            let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755));
            up = p.parent();
        }
        std::os::unix::fs::chown(&mail, Some(id("-u", "dovecot")), Some(id("-g", "dovecot")))
            .unwrap();
        let oauth = match tokeninfo {
            Some(url) => {
                std::fs::write(
                    dir.join("oauth2.conf.ext"),
                    format!("tokeninfo_url = {url}\nusername_attribute = username\nusername_format = %d\n"),
                )
                .unwrap();
                format!(
                    "passdb {{\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n  args = {}\n}}\n",
                    dir.join("oauth2.conf.ext").display()
                )
            }
            None => String::new(),
        };
        let d = dir.display();
        let config = format!(
            "base_dir = {d}/run\nstate_dir = {d}/run\nlog_path = {d}/dovecot.log\n\
             ssl = no\ndisable_plaintext_auth = no\nprotocols = imap\nlisten = 127.0.0.1\n\
             auth_mechanisms = plain login xoauth2 oauthbearer\nauth_verbose = yes\n\
             default_login_user = dovenull\ndefault_internal_user = dovecot\n\
             mail_location = maildir:{d}/mail/%u\nmail_uid = dovecot\nmail_gid = dovecot\nfirst_valid_uid = 1\n\
             service imap-login {{\n  inet_listener imap {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n  inet_listener imaps {{\n    port = 0\n  }}\n}}\n\
             service pop3-login {{\n  inet_listener pop3 {{\n    port = 0\n  }}\n}}\n\
             {oauth}passdb {{\n  driver = static\n  args = password={PASSWORD}\n}}\n\
             userdb {{\n  driver = static\n  args = uid=dovecot gid=dovecot home={d}/mail/%u\n}}\n"
        );
        std::fs::write(dir.join("dovecot.conf"), config).unwrap();
        let child = Command::new("dovecot")
            .arg("-F")
            .arg("-c")
            .arg(dir.join("dovecot.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dovecot starts (apt-get install dovecot-imapd)");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "Dovecot did not listen on {port}: {}",
                std::fs::read_to_string(dir.join("dovecot.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Dovecot {
            child: Some(child),
            port,
            dir,
        }
    }

    /// Dovecot's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dovecot.log")).unwrap_or_default()
    }

    /// Every message of every folder of the mailboxes, as an independent client sees them:
    /// {mailbox: {folder: [{flags, internaldate, date, message_id, item_id}]}}.
    pub fn read_back(&self, mailboxes: &[&str]) -> serde_json::Value {
        let script = r#"
import imaplib, json, sys, email.utils, re
port, password, users = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
out = {}
for user in users:
    m = imaplib.IMAP4("127.0.0.1", port)
    m.login(user, password)
    folders = {}
    typ, lines = m.list()
    for line in lines:
        flags, delim, name = re.match(r'\((.*?)\) "(.)" "?(.*?)"?$', line.decode()).groups()
        if not name.startswith("INBOX" + delim):
            continue
        m.select('"%s"' % name, readonly=True)
        typ, data = m.fetch("1:*", "(FLAGS INTERNALDATE BODY.PEEK[HEADER.FIELDS (DATE MESSAGE-ID X-COMMS-ARCHIVER-ITEM-ID)])")
        messages = []
        for part in data:
            if not isinstance(part, tuple):
                continue
            meta, header = part[0].decode(), email.message_from_bytes(part[1])
            internal = imaplib.Internaldate2tuple(part[0])
            messages.append({
                "seen": "\\Seen" in meta,
                "internaldate": int(__import__("time").mktime(internal)) if internal else None,
                "date": int(email.utils.parsedate_to_datetime(header["Date"]).timestamp()),
                "message_id": header["Message-ID"],
                "item_id": header["X-Comms-Archiver-Item-Id"],
            })
        folders[name[len("INBOX") + 1:]] = messages
    out[user] = folders
    m.logout()
print(json.dumps(out))
"#;
        let out = Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(self.port.to_string())
            .arg(PASSWORD)
            .args(mailboxes)
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            crate::support::stop(child);
        }
    }
}
