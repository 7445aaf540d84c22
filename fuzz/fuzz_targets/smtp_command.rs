//! The SMTP intake's command parser: any line gives a command or a refusal with a 5xx code,
//! and no address it returns holds white space or control characters (which would let a
//! client smuggle text into a log line or a reply).
#![no_main]
use comms_archiver::intake::command::{self, Command};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for line in data.split(|&b| b == b'\n') {
        match command::parse(line) {
            Ok(Command::Mail(mail)) => {
                assert!(!mail.from.chars().any(|c| c.is_whitespace() || c.is_control()))
            }
            Ok(Command::Rcpt(to)) => {
                assert!(!to.is_empty());
                assert!(!to.chars().any(|c| c.is_whitespace() || c.is_control()));
            }
            Ok(Command::Helo(d) | Command::Ehlo(d)) => assert!(!d.contains(' ') && !d.is_empty()),
            Ok(_) => {}
            Err(refusal) => assert!((500..600).contains(&refusal.code), "{refusal:?}"),
        }
    }
});
