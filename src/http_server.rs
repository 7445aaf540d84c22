//! A small HTTP/1.1 server for loopback endpoints: the health and metrics endpoint and the
//! partner simulator. Connections are kept for further requests (HTTP/1.1's default) until
//! the client asks to close or stays idle for 10 s; bodies sized by Content-Length, heads of
//! at most 16 KiB and bodies of at most 16 MiB.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A parsed request.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    /// The path, percent-decoded.
    pub path: String,
    pub query: HashMap<String, String>,
    /// Header names lowercased.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// A response to write.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Response {
            status,
            content_type,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Response::new(status, "text/plain", body.into().into_bytes())
    }

    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        Response::new(status, "application/json", value.to_string().into_bytes())
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// Binds `addr`; the error names the address.
pub async fn bind(addr: std::net::SocketAddr, what: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot listen on {addr} ({what}): {e}"))
    })
}

/// Answers every connection on `listener` with `handler`, until the task is dropped.
pub async fn serve<H, F>(listener: TcpListener, handler: Arc<H>)
where
    H: Fn(Request) -> F + Send + Sync + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        // A response is written whole: nothing is gained by holding back its last segment
        // until the client acknowledges the ones before.
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        tokio::spawn(async move {
            let _ = connection(stream, handler.as_ref()).await;
        });
    }
}

/// How long a connection may wait for (the rest of) a request.
const IDLE: Duration = Duration::from_secs(10);

async fn connection<H, F>(mut stream: TcpStream, handler: &H) -> std::io::Result<()>
where
    H: Fn(Request) -> F,
    F: Future<Output = Response>,
{
    // Bytes read past one request belong to the next.
    let mut buf = Vec::with_capacity(8 * 1024);
    loop {
        let read = tokio::time::timeout(IDLE, read_request(&mut stream, &mut buf)).await;
        let (request, keep) = match read {
            Ok(Ok(Some(read))) => read,
            // The client closed between requests, or stayed idle.
            Ok(Ok(None)) | Err(_) => return Ok(()),
            Ok(Err(e)) => {
                let response = Response::text(400, format!("{e}\n"));
                return write_response(&mut stream, &response, false, false).await;
            }
        };
        let head_only = request.method == "HEAD";
        let response = handler(request).await;
        write_response(&mut stream, &response, head_only, keep).await?;
        if !keep {
            return Ok(());
        }
    }
}

/// The next request on `stream` (with `buf` holding what was read past the last one), and
/// whether the connection is kept after it; None when the client closed between requests.
async fn read_request(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<(Request, bool)>> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let mut scanned = 0;
    let head_end = loop {
        if let Some(i) = buf[scanned..].windows(4).position(|w| w == b"\r\n\r\n") {
            break scanned + i;
        }
        scanned = buf.len().saturating_sub(3);
        if buf.len() > 16 * 1024 {
            return Err(bad("request head too large"));
        }
        buf.reserve(8 * 1024);
        if stream.read_buf(buf).await? == 0 {
            return match buf.is_empty() {
                true => Ok(None),
                false => Err(bad("connection closed before the request head ended")),
            };
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split_whitespace();
    let method = first.next().ok_or_else(|| bad("no method"))?.to_string();
    let target = first.next().ok_or_else(|| bad("no target"))?;
    let version = first.next().unwrap_or("HTTP/1.0");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .map(|v| v.parse().map_err(|_| bad("bad content-length")))
        .transpose()?
        .unwrap_or(0);
    if length > 16 * 1024 * 1024 {
        return Err(bad("request body too large"));
    }
    let end = head_end + 4 + length;
    buf.reserve(end.saturating_sub(buf.len()));
    while buf.len() < end {
        if stream.read_buf(buf).await? == 0 {
            return Err(bad("connection closed inside the body"));
        }
    }
    let body = buf[head_end + 4..end].to_vec();
    buf.drain(..end);
    let close = headers
        .get("connection")
        .is_some_and(|c| c.eq_ignore_ascii_case("close"));
    let keep = version == "HTTP/1.1" && !close;
    let request = Request {
        method,
        path: percent_decode(path),
        query: url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect(),
        headers,
        body,
    };
    Ok(Some((request, keep)))
}

/// `%XX` escapes decoded; anything else (including '+') kept as it is.
fn percent_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn write_response(
    stream: &mut TcpStream,
    response: &Response,
    head_only: bool,
    keep: bool,
) -> std::io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: {}\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len(),
        if keep { "keep-alive" } else { "close" }
    );
    for (name, value) in &response.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if !head_only {
        bytes.extend_from_slice(&response.body);
    }
    stream.write_all(&bytes).await?;
    match keep {
        true => stream.flush().await,
        false => stream.shutdown().await,
    }
}

/// GETs `path` from a server on `addr`; returns the status code and body.
pub async fn get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let response = String::from_utf8_lossy(&response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP response")
        })?;
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |x| x.1)
        .to_string();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server answering each request with its method, path and body length.
    async fn echo() -> std::net::SocketAddr {
        let listener = bind("127.0.0.1:0".parse().unwrap(), "test").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handler = |r: Request| async move {
            Response::text(200, format!("{} {} {}", r.method, r.path, r.body.len()))
        };
        tokio::spawn(serve(listener, Arc::new(handler)));
        addr
    }

    /// Reads one response off `stream`: its connection header and body.
    async fn response(stream: &mut TcpStream, pending: &mut Vec<u8>) -> (String, String) {
        loop {
            if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&pending[..end]).to_string();
                let field = |name: &str| {
                    head.lines()
                        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                        .unwrap_or_default()
                        .to_string()
                };
                let length: usize = field("content-length").parse().unwrap();
                while pending.len() < end + 4 + length {
                    assert!(stream.read_buf(pending).await.unwrap() > 0);
                }
                let body = String::from_utf8_lossy(&pending[end + 4..end + 4 + length]);
                let body = body.to_string();
                pending.drain(..end + 4 + length);
                return (field("connection"), body);
            }
            assert!(stream.read_buf(pending).await.unwrap() > 0, "closed early");
        }
    }

    #[tokio::test]
    async fn a_connection_serves_requests_one_after_another_until_asked_to_close() {
        let addr = echo().await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut pending = Vec::new();
        // Two requests in one write: the second's bytes are read with the first's.
        stream
            .write_all(
                b"POST /a HTTP/1.1\r\ncontent-length: 5\r\n\r\nhelloGET /b?x=1 HTTP/1.1\r\n\r\n",
            )
            .await
            .unwrap();
        let first = response(&mut stream, &mut pending).await;
        assert_eq!(first, ("keep-alive".into(), "POST /a 5".into()));
        let second = response(&mut stream, &mut pending).await;
        assert_eq!(second, ("keep-alive".into(), "GET /b 0".into()));
        stream
            .write_all(b"GET /c HTTP/1.1\r\nConnection: Close\r\n\r\n")
            .await
            .unwrap();
        let third = response(&mut stream, &mut pending).await;
        assert_eq!(third, ("close".into(), "GET /c 0".into()));
        assert_eq!(stream.read_buf(&mut pending).await.unwrap(), 0, "closed");

        // HTTP/1.0 is one request per connection.
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(b"GET /d HTTP/1.0\r\n\r\n").await.unwrap();
        let mut pending = Vec::new();
        assert_eq!(response(&mut stream, &mut pending).await.0, "close");
        assert_eq!(stream.read_buf(&mut pending).await.unwrap(), 0, "closed");
    }
}
