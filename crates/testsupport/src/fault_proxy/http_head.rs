//! Just enough HTTP/1.1 to find and rewrite message heads: the proxy never
//! parses bodies, it streams them raw.

use std::io::{self, Read};

/// A head larger than this is not from a real peer: give up on it.
const MAX_HEAD_BYTES: usize = 1 << 20;
const READ_CHUNK: usize = 16 * 1024;
/// Headers that describe one hop rather than the message, replaced by
/// `Connection: close` so every connection carries exactly one exchange.
const HOP_BY_HOP: [&str; 3] = ["connection", "keep-alive", "proxy-connection"];

/// A request or response head: start line, then headers in order.
pub(super) struct Head {
    /// The head exactly as received, for heads passed on unchanged.
    pub raw: Vec<u8>,
    pub start_line: String,
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// `(method, target)` of a request line.
    pub fn request_target(&self) -> Option<(String, String)> {
        let mut parts = self.start_line.split(' ');
        let method = parts.next().filter(|m| !m.is_empty())?;
        let target = parts.next().filter(|t| !t.is_empty())?;
        parts.next().filter(|v| v.starts_with("HTTP/"))?;
        Some((method.to_string(), target.to_string()))
    }

    /// The status code of a response's status line.
    pub fn status(&self) -> Option<u16> {
        let mut parts = self.start_line.split(' ');
        parts.next().filter(|v| v.starts_with("HTTP/"))?;
        parts.next()?.parse().ok()
    }

    /// The head re-serialised with `Connection: close` in place of any
    /// connection-management headers.
    pub fn with_connection_close(&self) -> Vec<u8> {
        let mut out = String::with_capacity(self.raw.len() + 20);
        out.push_str(&self.start_line);
        out.push_str("\r\n");
        for (name, value) in &self.headers {
            if !HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h)) {
                out.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        out.push_str("Connection: close\r\n\r\n");
        out.into_bytes()
    }
}

/// Read from `stream` until a complete head is buffered. `buffered` holds
/// bytes already read from the stream. Returns the head and the bytes read
/// past it (the start of the body or of the next head), or `None` when the
/// stream ends before a single byte of a head.
pub(super) fn read_head(
    stream: &mut impl Read,
    mut buffered: Vec<u8>,
) -> io::Result<Option<(Head, Vec<u8>)>> {
    let mut searched = 0;
    loop {
        if let Some(end) = find_head_end(&buffered, searched) {
            let rest = buffered.split_off(end);
            return parse(buffered).map(|head| Some((head, rest)));
        }
        // The terminator may straddle two reads: search again from 3 back.
        searched = buffered.len().saturating_sub(3);
        if buffered.len() > MAX_HEAD_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "HTTP head too large",
            ));
        }
        let mut chunk = [0u8; READ_CHUNK];
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return if buffered.is_empty() {
                Ok(None)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "stream ended inside an HTTP head",
                ))
            };
        }
        buffered.extend_from_slice(&chunk[..n]);
    }
}

/// The index just past the blank line that ends a head.
fn find_head_end(bytes: &[u8], from: usize) -> Option<usize> {
    bytes[from..]
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| from + i + 4)
}

fn parse(raw: Vec<u8>) -> io::Result<Head> {
    let text = std::str::from_utf8(&raw)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "HTTP head is not UTF-8"))?;
    let mut lines = text.trim_end_matches("\r\n").split("\r\n");
    let start_line = lines.next().unwrap_or_default().to_string();
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_string(), value.trim().to_string()))
        .collect();
    Ok(Head {
        raw,
        start_line,
        headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_head_from_body_and_rewrites_connection() {
        let input = b"GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\nBODY".to_vec();
        let (head, rest) = read_head(&mut &input[..], Vec::new())
            .expect("read")
            .expect("a head");
        assert_eq!(rest, b"BODY");
        assert_eq!(
            head.request_target(),
            Some(("GET".to_string(), "/v2/".to_string()))
        );
        assert_eq!(
            head.with_connection_close(),
            b"GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn finds_a_terminator_split_across_reads() {
        // A reader that hands out one byte at a time.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let Some((first, rest)) = self.0.split_first() else {
                    return Ok(0);
                };
                buf[0] = *first;
                self.0 = rest;
                Ok(1)
            }
        }
        let mut input = Trickle(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        let (head, rest) = read_head(&mut input, Vec::new())
            .expect("read")
            .expect("a head");
        assert_eq!(head.status(), Some(404));
        assert!(rest.is_empty());
    }

    #[test]
    fn empty_stream_has_no_head() {
        assert!(read_head(&mut &b""[..], Vec::new())
            .expect("read")
            .is_none());
    }
}
