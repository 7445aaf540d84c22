//! TeleMessage's SFTP destination, for real: OpenSSH's sshd (Debian openssh-server) on a
//! loopback port, set up as docs/operations.md shows (internal-sftp, chrooted, key only),
//! uploads made with OpenSSH's sftp client into the zip-drop directory. A day run while a
//! ZIP is still being uploaded stays open with nothing imported; the next run imports every
//! message of it once.
//!
//! sshd insists that every directory of a chroot path is root's and writable by no one else,
//! which /tmp is not: the chroot is made under /var/lib/comms-archiver-sftp-check/ and
//! removed afterwards. The test needs root, as sshd's privilege separation does.

use crate::support::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// An sshd serving SFTP only, stopped (by pid) and its chroot removed when dropped.
struct Sshd {
    child: Child,
    port: u16,
    chroot: PathBuf,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.chroot);
    }
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen runs (Debian openssh-client)");
    assert!(status.success());
}

impl Sshd {
    fn start(work: &Path) -> Sshd {
        use std::os::unix::fs::PermissionsExt;
        let port = crate::support::free_port();
        let base = Path::new("/var/lib/comms-archiver-sftp-check");
        let chroot = base.join(format!("{}-{port}", std::process::id()));
        std::fs::create_dir_all(chroot.join("telemessage")).unwrap();
        for dir in [base, chroot.as_path()] {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        // sshd's privilege separation directory, which a system without a running sshd lacks.
        std::fs::create_dir_all("/run/sshd").unwrap();
        let keys = work.join("ssh");
        std::fs::create_dir_all(&keys).unwrap();
        keygen(&keys.join("host_key"));
        keygen(&keys.join("telemessage_key"));
        std::fs::copy(
            keys.join("telemessage_key.pub"),
            keys.join("authorized_keys"),
        )
        .unwrap();
        let k = keys.display();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {k}/host_key\nPidFile {k}/sshd.pid\n\
             AuthorizedKeysFile {k}/authorized_keys\nAuthenticationMethods publickey\n\
             PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\nUsePAM no\nStrictModes no\n\
             AllowTcpForwarding no\nX11Forwarding no\nPermitTunnel no\n\
             Subsystem sftp internal-sftp\nChrootDirectory {}\nForceCommand internal-sftp -u 0027\n",
            chroot.display()
        );
        std::fs::write(keys.join("sshd_config"), config).unwrap();
        let log = std::fs::File::create(keys.join("sshd.log")).unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(keys.join("sshd_config"))
            .stderr(log)
            .spawn()
            .expect("sshd runs (Debian openssh-server)");
        let sshd = Sshd {
            child,
            port,
            chroot,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sshd never listened: {}",
                std::fs::read_to_string(keys.join("sshd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        sshd
    }

    /// sftp with TeleMessage's key, running `batch`; `kbit` limits its bandwidth.
    fn sftp(&self, work: &Path, batch: &str, kbit: Option<u32>) -> Child {
        let mut command = Command::new("sftp");
        command
            .args(["-q", "-b", "-", "-P", &self.port.to_string(), "-i"])
            .arg(work.join("ssh/telemessage_key"))
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
            ])
            .args(["-o", "BatchMode=yes", "-o", "LogLevel=ERROR"]);
        if let Some(kbit) = kbit {
            command.args(["-l", &kbit.to_string()]);
        }
        let mut child = command
            .arg("root@127.0.0.1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sftp runs (Debian openssh-client)");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(batch.as_bytes())
            .unwrap();
        child
    }
}

/// The demo day's TeleMessage ZIP with a fourth message carrying a 2 MiB recording, so that
/// an upload at a limited rate takes seconds.
fn large_zip(fixtures: &Path, into: &Path) -> usize {
    use std::io::Read;
    let source = fixtures.join("telemessage-zip/202611200000-TeleMessage_1_031500.zip");
    let mut archive = zip::ZipArchive::new(std::fs::File::open(source).unwrap()).unwrap();
    let mut emls = Vec::new();
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).unwrap();
        if entry.name().ends_with(".eml") {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            emls.push((entry.name().to_string(), bytes));
        }
    }
    let mut noise = vec![0u8; 2 * 1024 * 1024];
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for byte in noise.iter_mut() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *byte = state as u8;
    }
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(&noise);
    let mut lines = String::new();
    for chunk in encoded.as_bytes().chunks(76) {
        lines.push_str(std::str::from_utf8(chunk).unwrap());
        lines.push_str("\r\n");
    }
    let call = format!(
        "From: \"447700900101\" <alice.smith@contoso.com>\r\n\
         To: \"447700900555\" <447700900555@sms.telemessage.example>\r\n\
         Date: Fri, 20 Nov 2026 11:00:00 +0000\r\nMessage-ID: <TM-20261120-0004@telemessage.example>\r\n\
         Subject: Voice call\r\nX-TELEMESSAGE-ArchiveMessageID: TM-20261120-0004\r\n\
         X-TELEMESSAGE-ArchiveInitiator: 447700900101\r\nX-TELEMESSAGE-MessageType: Voice\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"c\"\r\n\r\n\
         --c\r\nContent-Type: text/plain\r\n\r\nCall, 2 minutes.\r\n\
         --c\r\nContent-Type: audio/wav; name=\"call.wav\"\r\nContent-Transfer-Encoding: base64\r\n\r\n\
         {lines}--c--\r\n"
    );
    emls.push(("TM-20261120-0004.eml".into(), call.into_bytes()));
    let mut writer = zip::ZipWriter::new(std::fs::File::create(into).unwrap());
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let mut manifest = format!("Count: {}\r\n", emls.len());
    for (name, bytes) in &emls {
        writer.start_file(name.as_str(), stored).unwrap();
        writer.write_all(bytes).unwrap();
        manifest.push_str(&format!("{name}\r\n"));
    }
    writer.start_file("TeleMessage.mf", stored).unwrap();
    writer.write_all(manifest.as_bytes()).unwrap();
    writer.finish().unwrap();
    emls.len()
}

#[test]
fn a_zip_uploaded_over_sftp_is_imported_once_and_never_while_it_is_being_written() {
    let ws = workspace();
    let dir = ws.path();
    let sshd = Sshd::start(dir);
    let name = "202611200000-TeleMessage_1_031500.zip";
    let zip = dir.join(name);
    let emls = large_zip(&dir.join("fixtures"), &zip);
    let full = std::fs::metadata(&zip).unwrap().len();
    let drop = sshd.chroot.join("telemessage");
    let demo = std::fs::read_to_string(dir.join("config/demo.toml")).unwrap();
    let config = patched(
        &demo,
        &[(
            "transport = \"drop\"\npath = \"fixtures/telemessage-o2\"",
            &format!("transport = \"zip-drop\"\npath = \"{}\"", drop.display()),
        )],
    );
    std::fs::write(dir.join("config/sftp.toml"), config).unwrap();
    let run = || {
        cli(
            dir,
            &[
                "once",
                "--config",
                "config/sftp.toml",
                "--date",
                DEMO_DATE,
                "--connector",
                "o2",
            ],
        )
    };

    // Uploaded at 2 Mbit/s, the ZIP takes seconds; the day is run while it is part there.
    let batch = format!("put {} /telemessage/{name}\n", zip.display());
    let upload = sshd.sftp(dir, &batch, Some(2000));
    let target = drop.join(name);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let size = std::fs::metadata(&target).map(|m| m.len()).unwrap_or(0);
        if size > 0 && size < full {
            break;
        }
        assert!(
            size < full,
            "the upload finished before a run could see it part written"
        );
        assert!(Instant::now() < deadline, "the upload never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = run();
    let seen = std::fs::metadata(&target).unwrap().len();
    let uploaded = upload.wait_with_output().unwrap();
    assert!(
        uploaded.status.success(),
        "sftp: {}",
        String::from_utf8_lossy(&uploaded.stderr)
    );
    assert!(
        seen < full,
        "the run was over before the upload was: no partial file was seen"
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log: comms_archiver::report::StatusLog = serde_json::from_slice(
        &std::fs::read(dir.join("var/stage/reports/o2/2026-11-20.json")).unwrap(),
    )
    .unwrap();
    assert!(!log.complete);
    assert_eq!(log.errors[0].reason, "reconciliation", "{:?}", log.errors);
    assert_eq!(log.available_from_source, 0);
    assert!(
        !dir.join("var/mail").exists(),
        "nothing of a part-written ZIP is imported"
    );

    // Uploaded whole (and the run after: nothing twice).
    assert_eq!(std::fs::metadata(&target).unwrap().len(), full);
    for round in 0..2 {
        let out = run();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mail = dir.join("var/mail");
        let alice = messages(&mail, "alice.smith@contoso.com", FOLDER);
        let bob = messages(&mail, "bob.jones@contoso.com", FOLDER);
        assert_eq!(alice.len() + bob.len(), emls, "round {round}");
    }
    // Key only: a client without the key is refused.
    std::fs::write(dir.join("ssh/telemessage_key"), b"").unwrap();
    let refused = sshd.sftp(dir, "ls\n", None).wait_with_output().unwrap();
    assert!(!refused.status.success());
}
