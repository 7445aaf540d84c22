//! The comms-archiver binary: parse the command line, set up logging, run, map to exit codes.

use clap::Parser;
use comms_archiver::cli::{execute, Cli};
use std::process::ExitCode;

fn main() -> ExitCode {
    return_large_buffers();
    let cli = Cli::parse();
    // One TLS crypto provider for every HTTPS client in the process, chosen here.
    comms_archiver::install_crypto_provider();
    let verbosity = cli.verbose.min(2) as i8 - cli.quiet.min(2) as i8;
    comms_archiver::telemetry::init(cli.log_format, verbosity);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("comms-archiver: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(execute(cli)) {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("comms-archiver: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

/// Rendered messages and partner files of a few MB are allocated and freed all day. glibc's
/// malloc raises its mmap threshold to the largest block freed, after which such buffers come
/// from the heap and their memory stays with the process: an S day peaked at 225 to 260 MB
/// that way, and at 128 to 151 MB with the threshold fixed at 128 KiB (measured on this
/// project's bench day). Buffers over it are mapped and unmapped whole. An operator's own
/// `MALLOC_MMAP_THRESHOLD_` is left as set.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn return_large_buffers() {
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; it is called before any other
        // thread exists.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn return_large_buffers() {}
