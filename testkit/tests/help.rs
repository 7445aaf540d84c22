//! The testkit's binaries say what they are.

use std::process::Command;

fn help(binary: &str) -> String {
    let out = Command::new(binary).arg("--help").output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_simulator_describes_the_simulator() {
    let text = help(env!("CARGO_BIN_EXE_comms-archiver-sim"));
    assert!(
        text.starts_with("The partner simulator: serves the TeleMessage, CellTrust SL2 and Merge1"),
        "{text}"
    );
    assert!(text.contains("Example:"), "{text}");
    assert!(
        !text.contains("kept out of the daemon"),
        "not the crate's description: {text}"
    );
}

#[test]
fn the_sas_helper_describes_itself() {
    let text = help(env!("CARGO_BIN_EXE_comms-archiver-azurite-sas"));
    assert!(
        text.starts_with("Prints an account SAS for Azurite"),
        "{text}"
    );
}
