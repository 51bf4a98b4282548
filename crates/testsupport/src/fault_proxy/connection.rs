//! One client connection: read its request head, then inject the fault the
//! rules picked or forward the exchange to the upstream, streaming both
//! bodies.

use super::http_head::{read_head, Head};
use super::{Fault, Shared, CONNECT_TIMEOUT};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a client gets to close its side once its response is complete
/// (or to finish sending a body nobody will read) before the proxy hangs up.
const CLIENT_CLOSE_GRACE: Duration = Duration::from_secs(10);
/// How long to wait for cut-off response bytes to reach the client before
/// the reset, which would discard any still queued.
const FLUSH_BEFORE_RESET: Duration = Duration::from_secs(2);
const PIPE_CHUNK: usize = 64 * 1024;

pub(super) fn serve_connection(shared: &Shared, mut client: TcpStream) {
    let _ = client.set_nodelay(true);
    // A connection that closes without a request (such as the wake-up from
    // `Drop`) is not logged.
    let Ok(Some((head, body_start))) = read_head(&mut client, Vec::new()) else {
        return;
    };
    let Some((method, target)) = head.request_target() else {
        let _ = answer(&mut client, 400, &[], "malformed request line");
        return;
    };
    let fault = shared.decide(&method, &target);
    let entry = shared.log_request(method, target, fault.clone());
    match fault {
        None => forward(shared, entry, client, &head, &body_start, None),
        Some(Fault::CutResponse { after_bytes }) => {
            forward(shared, entry, client, &head, &body_start, Some(after_bytes))
        }
        Some(Fault::Reset) => reset(client),
        Some(Fault::Status(code)) => {
            shared.set_status(entry, Some(code));
            let _ = answer(&mut client, code, &[], &format!("injected status {code}"));
        }
        Some(Fault::RateLimit { retry_after_secs }) => {
            shared.set_status(entry, Some(429));
            let retry_after = retry_after_secs.to_string();
            let _ = answer(
                &mut client,
                429,
                &[("Retry-After", &retry_after)],
                "injected rate limit",
            );
        }
        Some(Fault::Stall(duration)) => stall(shared, duration),
    }
}

/// Sleep without answering; wakes early when the proxy is dropped so a long
/// stall does not outlive the test by much.
fn stall(shared: &Shared, duration: Duration) {
    let end = Instant::now() + duration;
    while !shared.stopping.load(Ordering::SeqCst) {
        let now = Instant::now();
        if now >= end {
            break;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(100)));
    }
}

/// Close with RST instead of FIN: an SO_LINGER of zero makes close() abort
/// the connection, which the client sees as "connection reset by peer".
fn reset(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

/// Send a complete response of our own, then close gracefully.
fn answer(
    client: &mut TcpStream,
    status: u16,
    extra_headers: &[(&str, &str)],
    message: &str,
) -> io::Result<()> {
    let code = if status == 429 {
        "TOOMANYREQUESTS"
    } else {
        "UNKNOWN"
    };
    let body =
        format!(r#"{{"errors":[{{"code":"{code}","message":"cairn fault proxy: {message}"}}]}}"#);
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        reason_phrase(status),
        body.len()
    );
    for (name, value) in extra_headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    client.write_all(head.as_bytes())?;
    client.write_all(body.as_bytes())?;
    client.flush()?;
    client.shutdown(Shutdown::Write)?;
    // Closing with unread request bytes would reset the connection, and the
    // client might lose the answer: read what it still sends until it closes.
    drain_until_closed(client);
    Ok(())
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Injected Fault",
    }
}

/// Discard what the client sends until it closes, for at most
/// [`CLIENT_CLOSE_GRACE`] (a client that keeps the connection open anyway
/// must not keep the thread forever).
fn drain_until_closed(client: &mut TcpStream) {
    let deadline = Instant::now() + CLIENT_CLOSE_GRACE;
    let mut sink = [0u8; PIPE_CHUNK];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || client.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match client.read(&mut sink) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// How relaying the response ended.
enum RelayEnd {
    /// The upstream closed after its response: pass the close on.
    UpstreamClosed,
    /// The response was cut as a fault asked: reset the client.
    Cut,
    /// Writing to the client failed: it went away.
    ClientGone,
}

/// Pass the request on to the upstream and its response back, cutting the
/// response after `cut_after` body bytes if set.
fn forward(
    shared: &Shared,
    entry: usize,
    mut client: TcpStream,
    head: &Head,
    body_start: &[u8],
    cut_after: Option<u64>,
) {
    let upstream = match TcpStream::connect_timeout(&shared.upstream, CONNECT_TIMEOUT) {
        Ok(upstream) => upstream,
        Err(e) => {
            shared.set_status(entry, Some(502));
            let _ = answer(&mut client, 502, &[], &format!("upstream unreachable: {e}"));
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    let mut upstream_writer = upstream.try_clone().expect("cloning the upstream socket");
    let sent_head = upstream_writer
        .write_all(&head.with_connection_close())
        .and_then(|()| upstream_writer.write_all(body_start));
    if sent_head.is_err() {
        shared.set_status(entry, Some(502));
        let _ = answer(
            &mut client,
            502,
            &[],
            "upstream closed before the request was sent",
        );
        return;
    }

    // The request body flows on its own thread, so a response that starts
    // before the upload ends (an early error) is passed on at once.
    let client_reader = client.try_clone().expect("cloning the client socket");
    let (body_done, body_done_rx) = mpsc::channel();
    let body_pump = std::thread::Builder::new()
        .name("fault-proxy-body".into())
        .spawn(move || {
            pump_request_body(client_reader, upstream_writer);
            let _ = body_done.send(());
        })
        .expect("spawning the request body thread");

    let end = relay_response(shared, entry, &upstream, &mut client, cut_after);
    match end {
        RelayEnd::UpstreamClosed => {
            // FIN to the client, then give it time to close its side (and
            // to finish an upload the upstream did not wait for).
            let _ = client.shutdown(Shutdown::Write);
            if body_done_rx.recv_timeout(CLIENT_CLOSE_GRACE).is_err() {
                let _ = client.shutdown(Shutdown::Both);
            }
        }
        RelayEnd::Cut => {
            shared.set_status(entry, None);
            wait_until_sent(&client, FLUSH_BEFORE_RESET);
            let _ = socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO));
            // Wake the body thread (its read of the client returns 0, its
            // write upstream fails) so that our handle is the last one and
            // dropping it resets the connection.
            let _ = client.shutdown(Shutdown::Read);
            let _ = upstream.shutdown(Shutdown::Both);
        }
        RelayEnd::ClientGone => {
            let _ = upstream.shutdown(Shutdown::Both);
            let _ = client.shutdown(Shutdown::Both);
        }
    }
    let _ = body_pump.join();
    drop(client);
}

/// Copy the request body to the upstream until the client stops sending.
/// The client's half-close is passed on, as a direct connection would show
/// it. If the upstream stops reading (it answered early), keep reading and
/// discarding, so the client is not reset before it reads the answer.
fn pump_request_body(mut client: TcpStream, mut upstream: TcpStream) {
    let mut buf = vec![0u8; PIPE_CHUNK];
    let mut upstream_open = true;
    loop {
        match client.read(&mut buf) {
            Ok(0) => {
                let _ = upstream.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => {
                if upstream_open && upstream.write_all(&buf[..n]).is_err() {
                    upstream_open = false;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                let _ = upstream.shutdown(Shutdown::Both);
                return;
            }
        }
    }
}

/// Copy the upstream's response to the client with its head rewritten to
/// `Connection: close`, recording its status.
fn relay_response(
    shared: &Shared,
    entry: usize,
    mut upstream: &TcpStream,
    client: &mut TcpStream,
    cut_after: Option<u64>,
) -> RelayEnd {
    let mut buffered = Vec::new();
    let (head, body_start) = loop {
        let Ok(Some((head, rest))) = read_head(&mut upstream, buffered) else {
            // No (complete) response: the client gets none either.
            return RelayEnd::UpstreamClosed;
        };
        let status = head.status();
        // Interim responses (100 Continue for `Expect:`) pass unchanged; the
        // final one follows on the same connection.
        if status.is_some_and(|s| (100..200).contains(&s) && s != 101) {
            if client.write_all(&head.raw).is_err() {
                return RelayEnd::ClientGone;
            }
            buffered = rest;
            continue;
        }
        shared.set_status(entry, status);
        break (head, rest);
    };
    if client.write_all(&head.with_connection_close()).is_err() {
        return RelayEnd::ClientGone;
    }

    let mut body = BodyRelay {
        client,
        left_before_cut: cut_after,
    };
    if body.cut_due() {
        return RelayEnd::Cut;
    }
    match body.send(&body_start) {
        Ok(true) => return RelayEnd::Cut,
        Ok(false) => {}
        Err(_) => return RelayEnd::ClientGone,
    }
    let mut buf = vec![0u8; PIPE_CHUNK];
    loop {
        let n = match upstream.read(&mut buf) {
            Ok(0) => return RelayEnd::UpstreamClosed,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return RelayEnd::UpstreamClosed,
        };
        match body.send(&buf[..n]) {
            Ok(true) => return RelayEnd::Cut,
            Ok(false) => {}
            Err(_) => return RelayEnd::ClientGone,
        }
    }
}

/// Response body bytes on their way to the client, counted for a cut.
struct BodyRelay<'a> {
    client: &'a mut TcpStream,
    /// Bytes still to pass before the cut; `None`: no cut.
    left_before_cut: Option<u64>,
}

impl BodyRelay<'_> {
    fn cut_due(&self) -> bool {
        self.left_before_cut == Some(0)
    }

    /// Pass on `bytes`, or as many as fit before the cut; true when the cut
    /// is due now.
    fn send(&mut self, bytes: &[u8]) -> io::Result<bool> {
        let take = match self.left_before_cut {
            Some(left) => bytes.len().min(usize::try_from(left).unwrap_or(usize::MAX)),
            None => bytes.len(),
        };
        self.client.write_all(&bytes[..take])?;
        if let Some(left) = &mut self.left_before_cut {
            *left -= take as u64;
        }
        Ok(self.cut_due())
    }
}

/// Wait until the kernel has sent everything queued on `stream` (and the
/// peer acknowledged it), at most `limit`: a reset drops queued bytes, and a
/// cut must deliver exactly the bytes it promises.
fn wait_until_sent(stream: &TcpStream, limit: Duration) {
    use std::os::fd::AsRawFd;
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let mut queued: libc::c_int = 0;
        // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one c_int through the pointer,
        // which points at a live local; the fd belongs to `stream`.
        let rc = unsafe { libc::ioctl(stream.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
        if rc != 0 || queued == 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
