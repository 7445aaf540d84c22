//! SMTP commands as a client sends them (RFC 5321 4.1), read from one line without its
//! line end. Pure and total: any bytes give a command or the reply that refuses them, so
//! the parser can be fuzzed (`fuzz/fuzz_targets/smtp_command.rs`).

/// The longest command line taken, line end included (RFC 5321 4.5.3.1.4 says 512; AUTH
/// initial responses and ESMTP parameters make room for more).
pub const MAX_COMMAND_LINE: usize = 2048;

/// One command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Helo(String),
    Ehlo(String),
    Mail(Mail),
    Rcpt(String),
    Data,
    Rset,
    Noop,
    Quit,
    StartTls,
    Auth {
        mechanism: Mechanism,
        initial: Option<String>,
    },
    Vrfy,
    Help,
}

/// MAIL FROM with the ESMTP parameters it may carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    /// The reverse path, empty for the null sender `<>`.
    pub from: String,
    /// SIZE=, the size the client declares (RFC 1870).
    pub size: Option<u64>,
}

/// The SASL mechanisms offered after STARTTLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    Login,
}

/// Why a line is no command the server takes: the reply it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: u16,
    pub enhanced: &'static str,
    pub text: String,
}

impl Refusal {
    fn syntax(text: impl Into<String>) -> Refusal {
        Refusal {
            code: 501,
            enhanced: "5.5.4",
            text: text.into(),
        }
    }
}

/// Reads one command line (without CRLF).
pub fn parse(line: &[u8]) -> Result<Command, Refusal> {
    if line.len() + 2 > MAX_COMMAND_LINE {
        return Err(Refusal {
            code: 500,
            enhanced: "5.5.2",
            text: format!("line too long (the limit is {MAX_COMMAND_LINE} octets)"),
        });
    }
    if line.iter().any(|&b| b == 0 || b == b'\r' || b == b'\n') {
        return Err(Refusal {
            code: 500,
            enhanced: "5.5.2",
            text: "a command may not hold NUL, CR or LF".into(),
        });
    }
    let line = std::str::from_utf8(line).map_err(|_| Refusal {
        code: 500,
        enhanced: "5.5.2",
        text: "a command must be text".into(),
    })?;
    let (verb, rest) = match line.find(' ') {
        Some(at) => (&line[..at], &line[at + 1..]),
        None => (line, ""),
    };
    let verb = verb.to_ascii_uppercase();
    let no_argument = |command: Command| {
        if rest.trim().is_empty() {
            Ok(command)
        } else {
            Err(Refusal::syntax(format!("{verb} takes no argument")))
        }
    };
    match verb.as_str() {
        "HELO" | "EHLO" => {
            let domain = rest.trim();
            if domain.is_empty() || domain.contains(' ') {
                return Err(Refusal::syntax(format!(
                    "{verb} needs one domain or address"
                )));
            }
            Ok(match verb.as_str() {
                "HELO" => Command::Helo(domain.to_string()),
                _ => Command::Ehlo(domain.to_string()),
            })
        }
        "MAIL" => mail(rest),
        "RCPT" => {
            let (path, parameters) = path_after(rest, "TO:")?;
            if path.is_empty() {
                return Err(Refusal::syntax("RCPT TO needs an address"));
            }
            if !parameters.trim().is_empty() {
                return Err(Refusal {
                    code: 555,
                    enhanced: "5.5.4",
                    text: "RCPT TO takes no parameters here".into(),
                });
            }
            Ok(Command::Rcpt(path))
        }
        "DATA" => no_argument(Command::Data),
        "RSET" => no_argument(Command::Rset),
        "QUIT" => no_argument(Command::Quit),
        "STARTTLS" => no_argument(Command::StartTls),
        "NOOP" => Ok(Command::Noop),
        "VRFY" => Ok(Command::Vrfy),
        "HELP" => Ok(Command::Help),
        "AUTH" => {
            let mut words = rest.split(' ').filter(|w| !w.is_empty());
            let mechanism = match words.next().map(str::to_ascii_uppercase).as_deref() {
                Some("PLAIN") => Mechanism::Plain,
                Some("LOGIN") => Mechanism::Login,
                Some(other) => {
                    return Err(Refusal {
                        code: 504,
                        enhanced: "5.5.4",
                        text: format!("mechanism {other} is not offered (PLAIN, LOGIN)"),
                    })
                }
                None => return Err(Refusal::syntax("AUTH needs a mechanism")),
            };
            let initial = words.next().map(str::to_string);
            if words.next().is_some() {
                return Err(Refusal::syntax("AUTH takes a mechanism and one response"));
            }
            Ok(Command::Auth { mechanism, initial })
        }
        "" => Err(Refusal {
            code: 500,
            enhanced: "5.5.2",
            text: "empty command".into(),
        }),
        _ => Err(Refusal {
            code: 500,
            enhanced: "5.5.1",
            text: "command not recognized".into(),
        }),
    }
}

fn mail(rest: &str) -> Result<Command, Refusal> {
    let (from, parameters) = path_after(rest, "FROM:")?;
    let mut size = None;
    for parameter in parameters.split(' ').filter(|p| !p.is_empty()) {
        let (key, value) = parameter.split_once('=').unwrap_or((parameter, ""));
        match key.to_ascii_uppercase().as_str() {
            "SIZE" => {
                size = Some(value.parse::<u64>().map_err(|_| {
                    Refusal::syntax(format!("SIZE={value} is not a number of octets"))
                })?)
            }
            "BODY" => match value.to_ascii_uppercase().as_str() {
                "7BIT" | "8BITMIME" => {}
                _ => return Err(Refusal::syntax(format!("BODY={value} is not offered"))),
            },
            // RFC 3461 DSN parameters and AUTH= are harmless to ignore.
            "AUTH" | "RET" | "ENVID" => {}
            _ => {
                return Err(Refusal {
                    code: 555,
                    enhanced: "5.5.4",
                    text: format!("MAIL parameter {key} is not offered"),
                })
            }
        }
    }
    Ok(Command::Mail(Mail { from, size }))
}

/// `FROM:<path> params` or `TO:<path> params`: the path (without its brackets, and
/// without a source route) and what follows it.
fn path_after<'a>(rest: &'a str, keyword: &str) -> Result<(String, &'a str), Refusal> {
    let head = rest.get(..keyword.len()).unwrap_or("");
    if !head.eq_ignore_ascii_case(keyword) {
        return Err(Refusal::syntax(format!("expected {keyword}<address>")));
    }
    let after = rest[keyword.len()..].trim_start();
    let Some(inner) = after.strip_prefix('<') else {
        return Err(Refusal::syntax("the address must be in angle brackets"));
    };
    let Some(end) = inner.find('>') else {
        return Err(Refusal::syntax("the address has no closing '>'"));
    };
    let path = &inner[..end];
    // A source route (@a,@b:user@domain) is accepted and ignored (RFC 5321 4.1.2).
    let path = match path.starts_with('@') {
        true => path.split_once(':').map_or("", |(_, p)| p),
        false => path,
    };
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Refusal::syntax("the address holds white space"));
    }
    Ok((path.to_string(), &inner[end + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_read_case_insensitively_with_their_parameters() {
        assert_eq!(
            parse(b"ehlo relay.telemessage.example"),
            Ok(Command::Ehlo("relay.telemessage.example".into()))
        );
        assert_eq!(
            parse(b"MAIL FROM:<archive@telemessage.example> SIZE=4096 BODY=8BITMIME"),
            Ok(Command::Mail(Mail {
                from: "archive@telemessage.example".into(),
                size: Some(4096),
            }))
        );
        assert_eq!(
            parse(b"mail from: <>"),
            Ok(Command::Mail(Mail {
                from: String::new(),
                size: None
            }))
        );
        assert_eq!(
            parse(b"RCPT TO:<@relay.example:o2-archive@archive.example>"),
            Ok(Command::Rcpt("o2-archive@archive.example".into()))
        );
        assert_eq!(
            parse(b"AUTH plain AGFsaWNlAHNlY3JldA=="),
            Ok(Command::Auth {
                mechanism: Mechanism::Plain,
                initial: Some("AGFsaWNlAHNlY3JldA==".into())
            })
        );
        assert_eq!(parse(b"StartTLS"), Ok(Command::StartTls));
    }

    #[test]
    fn what_is_no_command_gets_the_reply_that_says_why() {
        let code = |line: &[u8]| parse(line).unwrap_err().code;
        assert_eq!(code(b"DATA now"), 501);
        assert_eq!(code(b"MAIL FROM:alice@example"), 501);
        assert_eq!(code(b"MAIL FROM:<a@b> SIZE=lots"), 501);
        assert_eq!(code(b"MAIL FROM:<a@b> SMTPUTF8"), 555);
        assert_eq!(code(b"RCPT TO:<>"), 501);
        assert_eq!(code(b"RCPT TO:<a b@c>"), 501);
        assert_eq!(code(b"AUTH CRAM-MD5"), 504);
        assert_eq!(code(b"TURN"), 500);
        assert_eq!(code(b"NOOP\0"), 500);
        assert_eq!(code(b"HELO"), 501);
        assert_eq!(code(&[b'N'; 10_000]), 500);
        assert_eq!(code(&[0xff, 0xfe]), 500);
    }
}
