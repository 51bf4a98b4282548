//! A small HTTP/1.1 file server on a loopback port, for `ADD <url>` tests.
//!
//! Files live in memory and can be changed while it runs; GET and HEAD are
//! served with `Content-Length`, an optional `Last-Modified`, and
//! `Connection: close` (one request per connection); unknown paths get 404.
//! Every request is counted, so a test can assert that a cached build made
//! none. Plain threads: one accepts, one serves each connection.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// One file the server has.
#[derive(Clone)]
struct File {
    body: Vec<u8>,
    /// The `Last-Modified` header as sent (an HTTP date), if any.
    last_modified: Option<String>,
}

struct Shared {
    files: Mutex<HashMap<String, File>>,
    /// Request targets in the order they arrived.
    log: Mutex<Vec<String>>,
    requests: AtomicUsize,
    stopping: AtomicBool,
}

/// A file server on its own 127.0.0.1 port; stops accepting when dropped.
pub struct HttpServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl HttpServer {
    pub fn start() -> HttpServer {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .expect("binding the HTTP server to 127.0.0.1:0");
        let addr = listener.local_addr().expect("the HTTP server's address");
        let shared = Arc::new(Shared {
            files: Mutex::new(HashMap::new()),
            log: Mutex::new(Vec::new()),
            requests: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
        });
        let acceptor = std::thread::Builder::new()
            .name(format!("http-server-{}", addr.port()))
            .spawn({
                let shared = Arc::clone(&shared);
                move || accept_loop(listener, shared)
            })
            .expect("spawning the HTTP server's accept thread");
        HttpServer {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/PATH` (`path` without its leading slash).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{}", self.addr, path.trim_start_matches('/'))
    }

    /// Serve `body` at `/path`, with `Last-Modified: last_modified` when
    /// given (an HTTP date such as `Wed, 21 Oct 2015 07:28:00 GMT`).
    pub fn put(&self, path: &str, body: impl Into<Vec<u8>>, last_modified: Option<&str>) {
        lock(&self.shared.files).insert(
            format!("/{}", path.trim_start_matches('/')),
            File {
                body: body.into(),
                last_modified: last_modified.map(str::to_string),
            },
        );
    }

    /// Stop serving `/path` (it answers 404 from now on).
    pub fn remove(&self, path: &str) {
        lock(&self.shared.files).remove(&format!("/{}", path.trim_start_matches('/')));
    }

    /// How many requests arrived so far (any method, any path, any answer).
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// The targets (path and query) of the requests so far, in order.
    pub fn request_log(&self) -> Vec<String> {
        lock(&self.shared.log).clone()
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // accept() blocks: a connection of our own wakes it to see the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking connection thread must not take the server down with it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let shared = Arc::clone(&shared);
        let _ = std::thread::Builder::new()
            .name("http-server-conn".into())
            .spawn(move || {
                let _ = serve(stream, &shared);
            });
    }
}

/// Read one request head, answer it, close.
fn serve(stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // The rest of the head: the server needs none of it.
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    lock(&shared.log).push(target.clone());
    let path = target.split('?').next().unwrap_or("").to_string();
    let file = lock(&shared.files).get(&path).cloned();
    let mut out = std::io::BufWriter::new(stream);
    match (method.as_str(), file) {
        ("GET" | "HEAD", Some(file)) => {
            write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n",
                file.body.len()
            )?;
            if let Some(date) = &file.last_modified {
                write!(out, "Last-Modified: {date}\r\n")?;
            }
            write!(out, "\r\n")?;
            if method == "GET" {
                out.write_all(&file.body)?;
            }
        }
        ("GET" | "HEAD", None) => {
            let body = b"not found\n";
            write!(
                out,
                "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            if method == "GET" {
                out.write_all(body)?;
            }
        }
        _ => write!(
            out,
            "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?,
    }
    out.flush()
}
