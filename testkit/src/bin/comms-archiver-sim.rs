//! The partner simulator binary: serves every partner contract on loopback for tests, demos
//! and benchmarks. See `comms_archiver_testkit::simulator`.

use clap::Parser;
use comms_archiver_testkit::simulator::{Simulator, SimulatorConfig};
use comms_archiver_testkit::workload::Workload;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

/// The partner simulator: serves the TeleMessage, CellTrust SL2 and Merge1 APIs on loopback,
/// from the fixtures' export drops or from generated days, with switches for the faults real
/// partners show, so that comms-archiver can be tried and tested without a partner account.
#[derive(Debug, Parser)]
#[command(
    name = "comms-archiver-sim",
    version,
    about = "The partner simulator: serves the TeleMessage, CellTrust SL2 and Merge1 APIs on \
             loopback from fixtures or generated days, with partner faults on demand",
    after_help = "Example:\n  comms-archiver-sim --fixtures fixtures --listen 127.0.0.1:18080 &\n  \
                  COMMS_ARCHIVER_SIM_SECRET=simulator comms-archiver once --config \
                  config/demo-https.toml --date 2026-11-20"
)]
struct Args {
    /// Directory holding the partners' export drops (telemessage-o2/, celltrust-sl2/, ...).
    #[arg(long, default_value = "fixtures")]
    fixtures: PathBuf,
    /// Address to listen on; loopback only.
    #[arg(long, default_value = "127.0.0.1:18080")]
    listen: SocketAddr,
    /// The secret every partner accepts (password, client secret, API key).
    #[arg(
        long,
        env = "COMMS_ARCHIVER_SIM_SECRET",
        default_value = "simulator",
        hide_env_values = true
    )]
    secret: String,
    /// Items generated per partner for days with no fixture.
    #[arg(long, default_value_t = 0)]
    generate: usize,
    /// Instead of --generate: this many items per day for days with no fixture, in the mix
    /// of `comms_archiver_testkit::workload` (SMS, WhatsApp with media, voice, CellTrust).
    #[arg(long, conflicts_with = "generate")]
    items: Option<usize>,
    /// Employees (mailboxes) of the generated mix, 1 to 10000.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u16).range(1..=10000))]
    mailboxes: u16,
    /// Seed of the generated mix.
    #[arg(long, default_value_t = 20261121)]
    seed: u64,
    /// CellTrust SL2 role of the account: domain_admin or ou_admin.
    #[arg(long, default_value = "domain_admin")]
    sl2_role: String,
    /// The unit of an ou_admin account.
    #[arg(long)]
    sl2_unit: Option<String>,
    /// The next N data requests answer 503.
    #[arg(long, default_value_t = 0)]
    fail_5xx: u32,
    /// The next N data requests answer 429 with Retry-After.
    #[arg(long, default_value_t = 0)]
    rate_limit: u32,
    #[arg(long, default_value_t = 1)]
    retry_after: u32,
    /// The next N pages are cut off mid-JSON.
    #[arg(long, default_value_t = 0)]
    truncate_pages: u32,
    /// Every answer waits this many milliseconds.
    #[arg(long, default_value_t = 0)]
    slow_ms: u64,
    /// Serve the last item of each page again at the top of the next.
    #[arg(long)]
    duplicate_across_pages: bool,
    /// Tokens stop working after this many requests.
    #[arg(long, default_value_t = 0)]
    token_ttl: u32,
    /// Answer everything with 503.
    #[arg(long)]
    down: bool,
    /// Instead of serving: send the day's TeleMessage email to this SMTP server
    /// (HOST:PORT), as TeleMessage's SMTP destination would, and exit.
    #[arg(long, value_name = "HOST:PORT")]
    smtp_to: Option<String>,
    /// The recipient the messages are sent to.
    #[arg(
        long,
        default_value = "o2-archive@archive.contoso.com",
        requires = "smtp_to"
    )]
    smtp_rcpt: String,
    /// The day sent: the EML files of its TeleMessage ZIPs under --fixtures/telemessage-zip.
    #[arg(long, default_value = "2026-11-20", requires = "smtp_to")]
    smtp_date: chrono::NaiveDate,
    /// One email per conversation per day instead of one per message.
    #[arg(long, requires = "smtp_to")]
    threaded: bool,
    /// Each email wrapped in a journal envelope.
    #[arg(long, requires = "smtp_to")]
    journal: bool,
    /// STARTTLS, trusting this CA certificate (PEM) for the server's.
    #[arg(long, value_name = "CA.pem", requires = "smtp_to")]
    starttls: Option<PathBuf>,
    /// A client certificate and key (PEM) presented over TLS.
    #[arg(long, num_args = 2, value_names = ["CERT.pem", "KEY.pem"], requires = "starttls")]
    client_cert: Option<Vec<PathBuf>>,
    /// AUTH PLAIN as this user after STARTTLS; the password is COMMS_ARCHIVER_SIM_SMTP_PASSWORD.
    #[arg(long, requires = "starttls")]
    smtp_user: Option<String>,
    /// Connections used at once.
    #[arg(long, default_value_t = 1, requires = "smtp_to")]
    connections: usize,
}

async fn send_day(args: &Args, server: &str) -> std::process::ExitCode {
    use comms_archiver_testkit::smtp;
    let dir = args.fixtures.join("telemessage-zip");
    let messages = match smtp::day_messages(&dir, args.smtp_date) {
        Ok(m) if !m.is_empty() => m,
        Ok(_) => {
            eprintln!(
                "comms-archiver-sim: no TeleMessage ZIP for {} in {}",
                args.smtp_date,
                dir.display()
            );
            return std::process::ExitCode::from(1);
        }
        Err(e) => {
            eprintln!("comms-archiver-sim: {}: {e}", dir.display());
            return std::process::ExitCode::from(1);
        }
    };
    let password = std::env::var("COMMS_ARCHIVER_SIM_SMTP_PASSWORD").unwrap_or_default();
    let options = smtp::SendOptions {
        threaded: args.threaded,
        journal: args.journal,
        starttls_ca: args.starttls.clone(),
        client_identity: args
            .client_cert
            .as_ref()
            .map(|pair| (pair[0].clone(), pair[1].clone())),
        auth: args.smtp_user.clone().map(|user| (user, password)),
        connections: args.connections,
    };
    let messages = smtp::prepared(messages, args.smtp_date, &options);
    let count = messages.len();
    match smtp::send(server, &args.smtp_rcpt, messages, &options).await {
        Ok(sent) => {
            println!(
                "sent {sent} of {count} message(s) for {} to {server}",
                args.smtp_date
            );
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("comms-archiver-sim: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if let Some(server) = args.smtp_to.clone() {
        return send_day(&args, &server).await;
    }
    if !args.listen.ip().is_loopback() {
        eprintln!("comms-archiver-sim: --listen must be a loopback address");
        return std::process::ExitCode::from(2);
    }
    let mut config = SimulatorConfig::new(&args.fixtures);
    config.secret = args.secret;
    config.generate_per_day = args.generate;
    config.workload = args.items.map(|items| Workload {
        items,
        mailboxes: args.mailboxes.into(),
        seed: args.seed,
    });
    config.sl2_role = args.sl2_role;
    config.sl2_unit = args.sl2_unit;
    let sim = Simulator::new(config);
    let f = sim.faults();
    f.fail_5xx.store(args.fail_5xx, Ordering::SeqCst);
    f.rate_limit.store(args.rate_limit, Ordering::SeqCst);
    f.retry_after_secs.store(args.retry_after, Ordering::SeqCst);
    f.truncate_pages
        .store(args.truncate_pages, Ordering::SeqCst);
    f.slow_ms.store(args.slow_ms, Ordering::SeqCst);
    f.duplicate_across_pages
        .store(args.duplicate_across_pages, Ordering::SeqCst);
    f.token_ttl.store(args.token_ttl, Ordering::SeqCst);
    f.down.store(args.down, Ordering::SeqCst);
    match sim.start(args.listen).await {
        Ok((addr, task)) => {
            println!("partner simulator listening on http://{addr}");
            tokio::select! {
                _ = task => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("comms-archiver-sim: {e}");
            std::process::ExitCode::from(1)
        }
    }
}
