//! One SMTP connection, from greeting to QUIT (RFC 5321), with SIZE (RFC 1870), 8BITMIME
//! (RFC 6152), PIPELINING (RFC 2920), STARTTLS (RFC 3207), AUTH PLAIN and LOGIN after TLS
//! (RFC 4954) and enhanced status codes (RFC 3463). A message is answered 250 only once it
//! is kept ([`super::Intake::accept`]); whatever happens before that, nothing is kept half.

use super::command::{self, Command, Mechanism, MAX_COMMAND_LINE};
use super::{Accepted, Intake};
use base64::Engine;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::watch;

/// What a session reads from and writes to: TCP, or TLS over it.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// How a line read ended.
enum Line {
    /// A line, without its line end.
    Text(Vec<u8>),
    /// A command line over [`MAX_COMMAND_LINE`]: read to its end and dropped.
    TooLong,
    Closed,
}

/// How the DATA that followed ended.
enum Data {
    /// The message, and the share of the intake's buffer budget it holds until dropped.
    Message(Vec<u8>, super::Reservation),
    /// Every session's messages together would hold more than `max_buffered_bytes`: read
    /// to its end and dropped, the sender told to come back (451).
    Busy,
    /// Over the size limit: read to its end and dropped.
    TooLarge,
    /// A line ended in LF alone, which would let a message hide a second one (SMTP
    /// smuggling): the connection is closed.
    BareLf,
    Closed,
}

/// Why a session ended early.
enum Ended {
    Closed,
    Shutdown,
    Idle,
}

/// The transaction's state.
#[derive(Default)]
struct Envelope {
    from: Option<String>,
    /// The connectors the recipients route to, each once.
    connectors: Vec<String>,
    recipients: usize,
}

pub struct Session {
    intake: Arc<Intake>,
    reader: BufReader<Box<dyn Io>>,
    out: Vec<u8>,
    shutdown: watch::Receiver<bool>,
    greeted: bool,
    tls: bool,
    authenticated: bool,
    envelope: Envelope,
}

/// The most recipients one message may have.
const MAX_RECIPIENTS: usize = 100;

impl Session {
    pub fn new(intake: Arc<Intake>, io: Box<dyn Io>, shutdown: watch::Receiver<bool>) -> Self {
        Session {
            intake,
            reader: BufReader::with_capacity(16 * 1024, io),
            out: Vec::with_capacity(512),
            shutdown,
            greeted: false,
            tls: false,
            authenticated: false,
            envelope: Envelope::default(),
        }
    }

    /// Serves the connection to its end.
    pub async fn run(mut self) -> std::io::Result<()> {
        let greeting = format!("{} ESMTP comms-archiver", self.intake.settings.hostname);
        self.reply(220, "", &greeting);
        match self.serve().await {
            Ok(()) => {}
            Err(Ended::Closed) => return Ok(()),
            Err(Ended::Shutdown) => {
                self.reply(421, "4.3.2", "shutting down; please try again later");
            }
            Err(Ended::Idle) => {
                self.reply(421, "4.4.2", "idle for too long; closing");
            }
        }
        let _ = self.flush().await;
        let _ = self.reader.get_mut().shutdown().await;
        Ok(())
    }

    async fn serve(&mut self) -> Result<(), Ended> {
        loop {
            let line = match self.line().await? {
                Line::Text(line) => line,
                Line::TooLong => {
                    let text = format!("line too long (the limit is {MAX_COMMAND_LINE} octets)");
                    self.reply(500, "5.5.2", &text);
                    continue;
                }
                Line::Closed => return Err(Ended::Closed),
            };
            let command = match command::parse(&line) {
                Ok(command) => command,
                Err(refusal) => {
                    self.reply(refusal.code, refusal.enhanced, &refusal.text);
                    continue;
                }
            };
            match command {
                Command::Ehlo(_) => self.ehlo(),
                Command::Helo(_) => {
                    self.greeted = true;
                    self.envelope = Envelope::default();
                    let name = self.intake.settings.hostname.clone();
                    self.reply(250, "", &name);
                }
                Command::StartTls => self.starttls().await?,
                Command::Auth { mechanism, initial } => self.auth(mechanism, initial).await?,
                Command::Mail(mail) => self.mail(mail),
                Command::Rcpt(to) => self.rcpt(&to),
                Command::Data => self.data().await?,
                Command::Rset => {
                    self.envelope = Envelope::default();
                    self.reply(250, "2.0.0", "Ok");
                }
                Command::Noop => self.reply(250, "2.0.0", "Ok"),
                Command::Vrfy => self.reply(252, "2.5.0", "cannot verify; send the message"),
                Command::Help => self.reply(214, "2.0.0", "see RFC 5321"),
                Command::Quit => {
                    self.reply(221, "2.0.0", "Bye");
                    let _ = self.flush().await;
                    return Err(Ended::Closed);
                }
            }
        }
    }

    fn ehlo(&mut self) {
        self.greeted = true;
        self.envelope = Envelope::default();
        let settings = &self.intake.settings;
        let mut lines = vec![
            settings.hostname.clone(),
            format!("SIZE {}", settings.max_message_bytes),
            "8BITMIME".into(),
            "PIPELINING".into(),
            "ENHANCEDSTATUSCODES".into(),
        ];
        if settings.tls.is_some() && !self.tls {
            lines.push("STARTTLS".into());
        }
        if settings.auth.is_some() && self.tls {
            lines.push("AUTH PLAIN LOGIN".into());
        }
        let last = lines.len() - 1;
        for (i, line) in lines.iter().enumerate() {
            let separator = if i == last { ' ' } else { '-' };
            self.out
                .extend_from_slice(format!("250{separator}{line}\r\n").as_bytes());
        }
    }

    async fn starttls(&mut self) -> Result<(), Ended> {
        let Some(tls) = self.intake.settings.tls.clone().filter(|_| !self.tls) else {
            let why = match self.tls {
                true => "TLS is already active",
                false => "STARTTLS is not offered",
            };
            self.reply(503, "5.5.1", why);
            return Ok(());
        };
        self.reply(220, "2.0.0", "Ready to start TLS");
        self.flush().await.map_err(|_| Ended::Closed)?;
        // Whatever the client sent after STARTTLS in the clear is dropped with the buffer
        // (RFC 3207 5: nothing from before the handshake may be taken as said over TLS).
        let idle: Box<dyn Io> = Box::new(tokio::io::duplex(1).0);
        let reader = std::mem::replace(&mut self.reader, BufReader::new(idle));
        let io = reader.into_inner();
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let handshake = tokio::time::timeout(self.intake.settings.idle, acceptor.accept(io));
        match handshake.await {
            Ok(Ok(stream)) => {
                self.reader = BufReader::with_capacity(16 * 1024, Box::new(stream));
                self.tls = true;
                self.greeted = false;
                self.authenticated = false;
                self.envelope = Envelope::default();
                Ok(())
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "a client's TLS handshake failed");
                Err(Ended::Closed)
            }
            Err(_) => Err(Ended::Closed),
        }
    }

    async fn auth(&mut self, mechanism: Mechanism, initial: Option<String>) -> Result<(), Ended> {
        let Some(expected) = self.intake.settings.auth.clone() else {
            self.reply(503, "5.5.1", "AUTH is not offered");
            return Ok(());
        };
        if !self.tls {
            self.reply(
                538,
                "5.7.11",
                "encryption required: issue STARTTLS before AUTH",
            );
            return Ok(());
        }
        if self.authenticated {
            self.reply(503, "5.5.1", "already authenticated");
            return Ok(());
        }
        let (username, password) = match mechanism {
            Mechanism::Plain => {
                let response = match initial {
                    Some(initial) => initial,
                    None => match self.challenge("").await? {
                        Some(r) => r,
                        None => return Ok(()),
                    },
                };
                let Some(decoded) = decode64(&response) else {
                    self.reply(501, "5.5.2", "the response is not base64");
                    return Ok(());
                };
                let mut parts = decoded.split(|&b| b == 0);
                let (_authzid, user, pass) = (parts.next(), parts.next(), parts.next());
                match (user, pass, parts.next()) {
                    (Some(u), Some(p), None) => (u.to_vec(), p.to_vec()),
                    _ => {
                        self.reply(501, "5.5.2", "not a PLAIN response");
                        return Ok(());
                    }
                }
            }
            Mechanism::Login => {
                let user = match initial {
                    Some(initial) => Some(initial),
                    None => self.challenge("VXNlcm5hbWU6").await?,
                };
                let Some(user) = user else { return Ok(()) };
                let Some(pass) = self.challenge("UGFzc3dvcmQ6").await? else {
                    return Ok(());
                };
                match (decode64(&user), decode64(&pass)) {
                    (Some(u), Some(p)) => (u, p),
                    _ => {
                        self.reply(501, "5.5.2", "the response is not base64");
                        return Ok(());
                    }
                }
            }
        };
        if same(&username, expected.username.as_bytes())
            & same(&password, expected.password.expose().as_bytes())
        {
            self.authenticated = true;
            self.reply(235, "2.7.0", "Authentication successful");
        } else {
            tracing::warn!("a client failed to authenticate to the intake");
            self.reply(535, "5.7.8", "authentication credentials invalid");
        }
        Ok(())
    }

    /// Sends a 334 challenge and reads the answer; None when the client cancelled (and was
    /// told so).
    async fn challenge(&mut self, prompt: &str) -> Result<Option<String>, Ended> {
        self.out
            .extend_from_slice(format!("334 {prompt}\r\n").as_bytes());
        let line = match self.line().await? {
            Line::Text(line) => line,
            Line::TooLong => {
                self.reply(500, "5.5.2", "line too long");
                return Ok(None);
            }
            Line::Closed => return Err(Ended::Closed),
        };
        if line == b"*" {
            self.reply(501, "5.0.0", "authentication cancelled");
            return Ok(None);
        }
        Ok(Some(String::from_utf8_lossy(&line).into_owned()))
    }

    fn mail(&mut self, mail: command::Mail) {
        let settings = &self.intake.settings;
        if !self.greeted {
            return self.reply(503, "5.5.1", "send EHLO or HELO first");
        }
        if settings.require_tls && !self.tls {
            return self.reply(530, "5.7.0", "must issue a STARTTLS command first");
        }
        if settings.auth.is_some() && !self.authenticated {
            return self.reply(530, "5.7.0", "authentication required");
        }
        if self.envelope.from.is_some() {
            return self.reply(503, "5.5.1", "a transaction is open; RSET first");
        }
        if let Some(size) = mail.size.filter(|s| *s > settings.max_message_bytes) {
            let text = format!(
                "a message of {size} octets is over the limit of {} octets",
                settings.max_message_bytes
            );
            return self.reply(552, "5.3.4", &text);
        }
        self.envelope.from = Some(mail.from);
        self.reply(250, "2.1.0", "Ok");
    }

    fn rcpt(&mut self, to: &str) {
        if self.envelope.from.is_none() {
            return self.reply(503, "5.5.1", "send MAIL first");
        }
        if self.envelope.recipients >= MAX_RECIPIENTS {
            return self.reply(452, "4.5.3", "too many recipients");
        }
        let Some(route) = self.intake.route(to) else {
            return self.reply(550, "5.1.1", "no such recipient here");
        };
        let connector = route.connector.clone();
        self.envelope.recipients += 1;
        if !self.envelope.connectors.contains(&connector) {
            self.envelope.connectors.push(connector);
        }
        self.reply(250, "2.1.5", "Ok");
    }

    async fn data(&mut self) -> Result<(), Ended> {
        if self.envelope.from.is_none() {
            self.reply(503, "5.5.1", "send MAIL first");
            return Ok(());
        }
        if self.envelope.connectors.is_empty() {
            self.reply(554, "5.5.1", "no valid recipients");
            return Ok(());
        }
        self.reply(354, "", "End data with <CR><LF>.<CR><LF>");
        self.flush().await.map_err(|_| Ended::Closed)?;
        let limit = self.intake.settings.max_message_bytes;
        let data = self.read_data(limit).await?;
        let connectors = std::mem::take(&mut self.envelope).connectors;
        match data {
            Data::Closed => Err(Ended::Closed),
            Data::BareLf => {
                self.reply(
                    521,
                    "5.5.2",
                    "bare LF received; lines must end in CRLF (RFC 5321 2.3.8)",
                );
                let _ = self.flush().await;
                Err(Ended::Closed)
            }
            Data::TooLarge => {
                let text = format!("the message is over the limit of {limit} octets");
                self.reply(552, "5.3.4", &text);
                Ok(())
            }
            Data::Busy => {
                tracing::warn!("the intake's buffers are full (intake.max_buffered_bytes); told a sender to retry");
                self.reply(451, "4.3.1", "too busy just now; please retry");
                Ok(())
            }
            Data::Message(message, _reservation) => {
                let (code, enhanced, text) = match self.intake.accept(&connectors, &message).await {
                    Accepted::Kept { again: false } => (250, "2.0.0", "Ok: kept".to_string()),
                    Accepted::Kept { again: true } => (
                        250,
                        "2.0.0",
                        "Ok: kept before (the same message was sent again)".to_string(),
                    ),
                    Accepted::Refused(why) => (550, "5.6.0", why),
                    Accepted::NotKept(why) => (451, "4.3.0", why),
                };
                self.reply(code, enhanced, &text);
                Ok(())
            }
        }
    }

    /// Queues one reply (a single line; text never holds CR or LF).
    fn reply(&mut self, code: u16, enhanced: &str, text: &str) {
        let text: String = text.chars().filter(|c| !c.is_control()).collect();
        let line = match enhanced {
            "" => format!("{code} {text}\r\n"),
            _ => format!("{code} {enhanced} {text}\r\n"),
        };
        self.out.extend_from_slice(line.as_bytes());
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.out);
        let io = self.reader.get_mut();
        io.write_all(&out).await?;
        io.flush().await?;
        self.out = out;
        self.out.clear();
        Ok(())
    }

    /// Waits for more input; replies queued go out first unless the client has pipelined
    /// more commands already (RFC 2920: replies to a group go in one write).
    async fn fill(&mut self) -> Result<bool, Ended> {
        if self.reader.buffer().is_empty() {
            self.flush().await.map_err(|_| Ended::Closed)?;
        }
        let idle = self.intake.settings.idle;
        let mut shutdown = self.shutdown.clone();
        if *shutdown.borrow() {
            return Err(Ended::Shutdown);
        }
        tokio::select! {
            filled = tokio::time::timeout(idle, self.reader.fill_buf()) => match filled {
                Ok(Ok(buf)) => Ok(!buf.is_empty()),
                Ok(Err(_)) => Err(Ended::Closed),
                Err(_) => Err(Ended::Idle),
            },
            _ = shutdown.wait_for(|stop| *stop) => Err(Ended::Shutdown),
        }
    }

    /// One command line, without its line end (CRLF, or LF alone, which commands may use).
    async fn line(&mut self) -> Result<Line, Ended> {
        let mut line = Vec::new();
        let mut too_long = false;
        loop {
            if !self.fill().await? {
                return Ok(Line::Closed);
            }
            let (chunk, found) = up_to_line_end(self.reader.buffer());
            let used = chunk.len();
            if !too_long && line.len() + used <= MAX_COMMAND_LINE {
                line.extend_from_slice(chunk);
            } else {
                too_long = true;
                line.clear();
            }
            self.reader.consume(used);
            if found {
                if too_long {
                    return Ok(Line::TooLong);
                }
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(Line::Text(line));
            }
        }
    }

    /// The message after DATA, dot-unstuffed, up to the line `.` (RFC 5321 4.5.2). Never
    /// holds more than `limit` octets of it, however long its lines.
    async fn read_data(&mut self, limit: u64) -> Result<Data, Ended> {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let mut message = Vec::new();
        let mut too_large = false;
        let mut reservation = self.intake.reservation();
        let mut busy = false;
        loop {
            // One line: where it starts in `message`, its length, and its last two octets.
            let start = message.len();
            let (mut length, mut ends) = (0usize, [0u8; 2]);
            let mut head = [0u8; 3];
            loop {
                if !self.fill().await? {
                    return Ok(Data::Closed);
                }
                let (chunk, found) = up_to_line_end(self.reader.buffer());
                for (i, &b) in chunk.iter().enumerate().take(3usize.saturating_sub(length)) {
                    head[length + i] = b;
                }
                ends = match chunk {
                    [.., a, b] => [*a, *b],
                    [b] => [ends[1], *b],
                    [] => ends,
                };
                length += chunk.len();
                if !too_large && message.len() + chunk.len() > limit + 3 {
                    too_large = true;
                    message = Vec::new();
                }
                if !too_large && !busy && !reservation.grow(chunk.len()) {
                    busy = true;
                    message = Vec::new();
                    reservation.release();
                }
                if !too_large && !busy {
                    message.extend_from_slice(chunk);
                }
                let used = chunk.len();
                self.reader.consume(used);
                if found {
                    break;
                }
            }
            if ends != *b"\r\n" {
                return Ok(Data::BareLf);
            }
            if length == 3 && head == *b".\r\n" {
                if too_large {
                    return Ok(Data::TooLarge);
                }
                if busy {
                    return Ok(Data::Busy);
                }
                message.truncate(start);
                return Ok(Data::Message(message, reservation));
            }
            if too_large || busy {
                continue;
            }
            if head[0] == b'.' {
                message.remove(start);
            }
            if message.len() > limit {
                too_large = true;
                message = Vec::new();
            }
        }
    }
}

/// The buffered input up to and including its first LF, and whether there was one.
fn up_to_line_end(buf: &[u8]) -> (&[u8], bool) {
    match buf.iter().position(|&b| b == b'\n') {
        Some(at) => (&buf[..at + 1], true),
        None => (buf, false),
    }
}

fn decode64(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()
}

/// Compares in time that depends on the lengths only.
fn same(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    let (a, b) = (Sha256::digest(a), Sha256::digest(b));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}
