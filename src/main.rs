//! The comms-archiver binary: parse the command line, set up logging, run, map to exit codes.

use clap::Parser;
use comms_archiver::cli::{execute, Cli};
use std::process::ExitCode;

fn main() -> ExitCode {
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
