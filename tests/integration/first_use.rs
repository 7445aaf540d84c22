//! What a new admin meets first: a command line that explains itself, dates checked with a
//! reason, and a `check` that finds a broken environment and says what and where.

use crate::support::*;
use std::path::Path;

fn demo(dir: &Path, args: &[&str]) -> std::process::Output {
    cli(dir, &[args, &["--config", "config/demo.toml"][..]].concat())
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn check_finds_a_missing_drop_directory_and_says_it_is_not_a_late_partner() {
    let ws = workspace();
    let dir = ws.path();
    let out = demo(dir, &["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let said = stdout(&out);
    assert!(
        said.contains(
            "OK    stage: local directory var/stage does not exist yet; it is created under"
        ),
        "{said}"
    );
    assert!(said.contains("everything checked is ready"), "{said}");
    // The probe leaves nothing behind, not even the directories a run creates.
    assert!(!dir.join("var").exists());
    std::fs::create_dir_all(dir.join("var/stage")).unwrap();
    let said = stdout(&demo(dir, &["check"]));
    assert!(
        said.contains("OK    stage: local directory var/stage takes writes"),
        "{said}"
    );
    let left: Vec<_> = std::fs::read_dir(dir.join("var/stage")).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");

    std::fs::rename(dir.join("fixtures/celltrust-sl2"), dir.join("elsewhere")).unwrap();
    let out = demo(dir, &["check"]);
    assert_eq!(out.status.code(), Some(2));
    let said = stdout(&out);
    assert!(
        said.contains(
            "FAIL  source: the drop directory fixtures/celltrust-sl2 does not exist: a \
             configuration or mount problem"
        ),
        "{said}"
    );
    assert!(
        said.contains("1 problem: fix what each FAIL says"),
        "{said}"
    );

    // A run says the same of the day, which stays open.
    let run = demo(dir, &["once", "--date", DEMO_DATE, "--connector", "sl2"]);
    assert_eq!(run.status.code(), Some(1));
    let logs = run_logs(dir, "sl2", DEMO_DATE);
    assert_eq!(
        logs[0]["errors"][0]["reason"], "source_missing",
        "{}",
        logs[0]
    );
}

/// A stage on a read-only file system (a tmpfs mounted read-only in a private mount
/// namespace): `check` names it and exits 2.
#[test]
fn check_finds_a_stage_that_refuses_writes() {
    let ws = workspace();
    let dir = ws.path();
    std::fs::create_dir_all(dir.join("var/stage")).unwrap();
    let binary = env!("CARGO_BIN_EXE_comms-archiver");
    let script = format!(
        "mount -t tmpfs -o ro,size=1m tmpfs var/stage || exit 90\n\
         \"{binary}\" check --config config/demo.toml\n"
    );
    let out = std::process::Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c", &script])
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .output()
        .expect("unshare runs (util-linux)");
    assert_ne!(
        out.status.code(),
        Some(90),
        "the read-only mount could not be made"
    );
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let said = stdout(&out);
    assert!(
        said.contains("FAIL  stage: stage local directory var/stage"),
        "{said}"
    );
    assert!(said.contains("Read-only file system"), "{said}");
}

#[test]
fn dates_are_checked_with_the_format_and_the_reason() {
    let ws = workspace();
    let dir = ws.path();
    let out = demo(dir, &["once", "--date", "20-11-2026"]);
    assert_eq!(out.status.code(), Some(2));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("is not a day written YYYY-MM-DD, e.g. 2026-11-20"),
        "{said}"
    );

    let today = chrono::Utc::now().date_naive().to_string();
    for args in [
        vec!["once", "--date", today.as_str()],
        vec!["backfill", "--from", "2026-11-01", "--to", today.as_str()],
        vec!["redrive", "--date", today.as_str()],
    ] {
        let out = demo(dir, &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.contains("is not over yet"), "{args:?}: {said}");
    }
    assert!(!dir.join("var").exists(), "nothing ran");
}

#[test]
fn every_option_has_a_help_line_and_help_ends_with_examples_and_exit_codes() {
    let ws = workspace();
    let dir = ws.path();
    let top = stdout(&cli(dir, &["--help"]));
    assert!(top.contains("Examples:\n"), "{top}");
    assert!(top.contains("Exit codes:\n"), "{top}");
    for code in ["  0  ", "  1  ", "  2  ", "  3  "] {
        assert!(top.contains(code), "{code}: {top}");
    }
    for command in [
        "run",
        "once",
        "backfill",
        "redrive",
        "check",
        "healthcheck",
        "report",
        "trace",
    ] {
        let help = stdout(&cli(dir, &[command, "-h"]));
        let options = help.split("Options:").nth(1).expect("an Options section");
        for line in options.lines().filter(|l| l.trim_start().starts_with('-')) {
            let (_flag, text) = line
                .trim_start()
                .split_once("  ")
                .unwrap_or_else(|| panic!("{command}: no help for `{}`", line.trim()));
            assert!(!text.trim().is_empty(), "{command}: no help for `{line}`");
        }
    }
}

#[test]
fn quiet_and_verbose_set_the_log_level() {
    let ws = workspace();
    let dir = ws.path();
    let once = |flag: &[&str]| {
        let args = [
            flag,
            &["once", "--config", "config/demo.toml", "--date", DEMO_DATE][..],
        ];
        String::from_utf8_lossy(&cli(dir, &args.concat()).stderr).to_string()
    };
    let normal = once(&[]);
    assert!(normal.contains(" INFO "), "{normal}");
    let quiet = once(&["-q"]);
    assert!(!quiet.contains(" INFO "), "{quiet}");
    assert!(
        quiet.contains(" WARN "),
        "the held copies are still told: {quiet}"
    );
    let quieter = once(&["-qq"]);
    assert!(!quieter.contains(" WARN "), "{quieter}");
    let verbose = once(&["-v"]);
    assert!(verbose.contains(" DEBUG "), "{verbose}");
}

/// The demo's O2 delivery carries one message of the 19th: `check --verify-stage` says where
/// it is staged, so its counts and the report's can be told apart.
#[test]
fn verify_stage_explains_items_staged_under_another_date() {
    let ws = workspace();
    let dir = ws.path();
    demo_day(dir, &[]);
    let verify = |date: &str| {
        let args = [
            "check",
            "--verify-stage",
            "--date",
            date,
            "--connector",
            "o2",
        ];
        let out = demo(dir, &args);
        assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
        stdout(&out)
    };
    let day = verify(DEMO_DATE);
    assert!(
        day.contains("the delivery of 2026-11-20 also carried items dated 2026-11-19"),
        "{day}"
    );
    let late = verify("2026-11-19");
    assert!(
        late.contains("o2 2026-11-19: staged and matching the ledger 1, changed or missing 0"),
        "{late}"
    );
    assert!(
        late.contains("1 item dated 2026-11-19 came with the delivery of 2026-11-20"),
        "{late}"
    );
}

/// `once` ends with what happened, per connector, where it went, what needs a person, and
/// the command that shows more; a re-run says the day, not just its own duplicates.
#[test]
fn once_ends_with_a_summary_of_each_day() {
    let ws = workspace();
    let dir = ws.path();
    let said = stdout(&demo_day(dir, &["-q"]));
    let o2: Vec<&str> = said
        .lines()
        .skip_while(|l| !l.starts_with("o2 "))
        .take(4)
        .collect();
    assert_eq!(
        o2[0],
        "o2 2026-11-20: complete; 18 items from the partner, 19 copies: 16 imported, 1 skipped \
         (duplicates), 2 held",
        "{said}"
    );
    let mail = dir.join("var/mail");
    assert_eq!(
        o2[1],
        format!(
            "  into maildir {}, folder 'O2 SMS and Voice Network Archiver'",
            mail.display()
        )
    );
    assert!(
        o2[2].starts_with("  needs a person: 2 held (1 size_exceeded, 1 user_mapping)"),
        "{said}"
    );
    assert_eq!(
        o2[3],
        "  more: comms-archiver report --config config/demo.toml --date 2026-11-20 --connector o2"
    );
    let again = stdout(&demo_day(dir, &["-q"]));
    assert!(
        again.contains(
            "16 imported, 1 skipped (duplicates), 2 held (over 2 runs; this one imported 0)"
        ),
        "{again}"
    );
}

/// A mapped employee may be named by the mapping CSV's optional `display_name` column, in
/// place of what the partner shows.
#[test]
fn the_mapping_csv_may_name_the_employee_in_the_archive() {
    let ws = workspace();
    let dir = ws.path();
    let path = dir.join("config/mapping-o2.csv");
    let named: Vec<String> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| match l {
            l if l.starts_with('#') || l.is_empty() => l.to_string(),
            l if l.starts_with("identifier,") => format!("{l},display_name"),
            l if l.contains("alice.smith@") => format!("{l},Alice Smith (Equities desk)"),
            l => format!("{l},"),
        })
        .collect();
    std::fs::write(&path, named.join("\n") + "\n").unwrap();
    finished(demo(
        dir,
        &["once", "--date", DEMO_DATE, "--connector", "o2"],
    ));
    let sms = messages(&dir.join("var/mail"), "bob.jones@contoso.com", FOLDER)
        .into_iter()
        .map(|p| std::fs::read(p).unwrap())
        .find(|m| header(m, "X-Comms-Archiver-Item-Id").as_deref() == Some("O2-20261120-0003"))
        .expect("Alice's SMS to Bob");
    let parsed = mail_parser::MessageParser::default().parse(&sms).unwrap();
    let from = parsed.from().unwrap().first().unwrap();
    assert_eq!(from.name(), Some("Alice Smith (Equities desk)"));
    assert_eq!(from.address(), Some("alice.smith@contoso.com"));
    let body = parsed.body_text(0).unwrap();
    assert!(
        body.contains(
            "From  Alice Smith (Equities desk), +44 7700 900101 <alice.smith@contoso.com>"
        ),
        "{body}"
    );
}
