//! Azurite, Microsoft's storage emulator, as a real service for the tests: blob service only,
//! on 127.0.0.1 and a free port, data in a temporary directory, stopped by pid.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The pinned Azurite version (.ci/run installs the same).
pub const VERSION: &str = "3.35.0";

/// The `azurite-blob` executable: $AZURITE_BLOB, else .ci/node (installed there by npm
/// when missing), else the PATH.
fn binary() -> PathBuf {
    static INSTALL: Mutex<()> = Mutex::new(());
    if let Ok(path) = std::env::var("AZURITE_BLOB") {
        return PathBuf::from(path);
    }
    let prefix = crate::support::repo().join(".ci/node");
    let local = prefix.join("node_modules/.bin/azurite-blob");
    let _guard = INSTALL.lock().unwrap();
    if !local.exists() {
        let status = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&prefix)
            .arg(format!("azurite@{VERSION}"))
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            return PathBuf::from("azurite-blob");
        }
    }
    local
}

/// A running Azurite, killed when dropped.
pub struct Azurite {
    child: Option<Child>,
    pub port: u16,
    location: PathBuf,
}

impl Azurite {
    /// Starts Azurite on a free port with its data in `location`.
    pub fn start(location: &Path) -> Azurite {
        let port = crate::support::free_port();
        let mut azurite = Azurite {
            child: None,
            port,
            location: location.to_path_buf(),
        };
        azurite.restart();
        azurite
    }

    /// Starts (again) on the same port and data.
    pub fn restart(&mut self) {
        std::fs::create_dir_all(&self.location).unwrap();
        let child = Command::new(binary())
            .args([
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                &self.port.to_string(),
                "--location",
            ])
            .arg(&self.location)
            .args(["--loose", "--skipApiVersionCheck", "--disableTelemetry"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("azurite-blob starts (npm install azurite, or set AZURITE_BLOB)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "Azurite did not listen on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops it with SIGTERM (it saves its data and exits), SIGKILL after 10 s.
    pub fn kill(&mut self) {
        if let Some(child) = self.child.take() {
            crate::support::stop(child);
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/devstoreaccount1", self.port)
    }

    /// The stage in `container`, signed in with a fresh SAS, one retry, `timeout` per
    /// operation.
    pub fn stage(&self, container: &str, timeout: Duration) -> comms_archiver::stage::AzureStage {
        comms_archiver::install_crypto_provider();
        comms_archiver::stage::AzureStage::new(
            &self.endpoint(),
            container,
            comms_archiver::stage::azure::AzureAuth::Sas(
                comms_archiver::secret::Secret::from_value(&sas()),
            ),
            1,
            timeout,
        )
        .unwrap()
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A fresh account SAS for the development account.
pub fn sas() -> String {
    comms_archiver_testkit::azurite::account_sas(
        comms_archiver_testkit::azurite::DEV_ACCOUNT,
        comms_archiver_testkit::azurite::DEV_KEY,
        chrono::Utc::now() + chrono::Duration::days(1),
    )
}
