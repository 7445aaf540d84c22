//! Prints an account SAS for Azurite's public development account, for the Azurite demo and
//! the benchmarks (`COMMS_ARCHIVER_AZURITE_SAS`). Never for a real account.

use clap::Parser;

/// Prints an account SAS for Azurite's public development account (devstoreaccount1).
#[derive(Debug, Parser)]
#[command(
    name = "comms-archiver-azurite-sas",
    version,
    about = "Prints an account SAS for Azurite's public development account (devstoreaccount1)"
)]
struct Args {
    /// Days until it expires.
    #[arg(long, default_value_t = 7)]
    days: i64,
}

fn main() {
    let args = Args::parse();
    let expiry = chrono::Utc::now() + chrono::Duration::days(args.days);
    use comms_archiver_testkit::azurite::{account_sas, DEV_ACCOUNT, DEV_KEY};
    println!("{}", account_sas(DEV_ACCOUNT, DEV_KEY, expiry));
}
