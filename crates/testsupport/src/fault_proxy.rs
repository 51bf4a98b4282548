//! A fault-injecting HTTP/1.1 proxy to put between a registry client and a
//! [`RegistryServer`](crate::registry_server::RegistryServer).
//!
//! The client talks to the proxy as if it were the registry. The proxy passes
//! the `Host` header on unchanged, so the absolute `Location` URLs the registry
//! builds from it point back at the proxy. Both heads are rewritten to
//! `Connection: close`: each connection then carries a single request, so
//! every request the client makes goes through the fault decision.
//!
//! Bodies (blob uploads and downloads of hundreds of MiB) are streamed, never
//! buffered. Plain threads: one accepts, one serves each connection.

mod connection;
mod http_head;

use connection::serve_connection;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the proxy does to a request instead of (or while) forwarding it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Read the request head, then reset the connection without answering.
    Reset,
    /// Answer with this status and a small registry-style JSON error body.
    Status(u16),
    /// Answer 429 with `Retry-After: N`, and answer every request in the next
    /// N seconds the same way (with the whole seconds left, at least 1), as a
    /// real rate limiter would. Requests answered by that window are logged
    /// with this fault too, carrying the `Retry-After` they got, and count as
    /// injected; rules do not see them.
    RateLimit { retry_after_secs: u64 },
    /// Read the request head, say nothing for this long, then close.
    Stall(Duration),
    /// Forward, but reset the connection once this many response body bytes
    /// have reached the client.
    CutResponse { after_bytes: u64 },
}

/// Which requests get a fault. Rules are checked in the order added; each
/// counts the requests it matches, lets the first `skip` through, injects its
/// fault into the next `times`, and is spent after that. The first rule that
/// injects decides; rules after it do not see that request.
#[derive(Clone, Debug)]
pub struct Rule {
    /// Only requests with this method (any case); `None`: any method.
    pub method: Option<String>,
    /// Only requests whose target (path and query) contains this.
    pub path_contains: Option<String>,
    pub fault: Fault,
    pub times: usize,
    pub skip: usize,
}

impl Rule {
    /// `fault` for the first request of any kind.
    pub fn new(fault: Fault) -> Rule {
        Rule {
            method: None,
            path_contains: None,
            fault,
            times: 1,
            skip: 0,
        }
    }

    pub fn method(mut self, method: &str) -> Rule {
        self.method = Some(method.to_string());
        self
    }

    pub fn path_contains(mut self, fragment: &str) -> Rule {
        self.path_contains = Some(fragment.to_string());
        self
    }

    pub fn times(mut self, times: usize) -> Rule {
        self.times = times;
        self
    }

    pub fn skip(mut self, skip: usize) -> Rule {
        self.skip = skip;
        self
    }

    fn matches(&self, method: &str, target: &str) -> bool {
        self.method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && self
                .path_contains
                .as_deref()
                .is_none_or(|p| target.contains(p))
    }
}

/// One request the proxy saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestLog {
    pub method: String,
    /// The request target: path and query.
    pub path: String,
    /// The status the client got, forwarded or injected; `None` when it got
    /// none (reset, stalled, cut, or the upstream gave no response).
    pub status: Option<u16>,
    /// The fault injected into this request, if any.
    pub fault: Option<Fault>,
}

/// A proxy on its own 127.0.0.1 port in front of `upstream`; stops accepting
/// when dropped (connections in flight finish on their own).
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl FaultProxy {
    pub fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .expect("binding the fault proxy to 127.0.0.1:0");
        let addr = listener.local_addr().expect("the fault proxy's address");
        let shared = Arc::new(Shared {
            upstream,
            rules: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
            injected: AtomicUsize::new(0),
            rate_limited_until: Mutex::new(None),
            stopping: AtomicBool::new(false),
        });
        let acceptor = std::thread::Builder::new()
            .name(format!("fault-proxy-{}", addr.port()))
            .spawn({
                let shared = Arc::clone(&shared);
                move || accept_loop(listener, shared)
            })
            .expect("spawning the fault proxy's accept thread");
        FaultProxy {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:PORT`, to use in place of the registry's host.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn add_rule(&self, rule: Rule) {
        lock(&self.shared.rules).push(RuleState { rule, matched: 0 });
    }

    /// Remove all rules and end any rate-limit window: from now on every
    /// request is forwarded.
    pub fn clear_rules(&self) {
        lock(&self.shared.rules).clear();
        *lock(&self.shared.rate_limited_until) = None;
    }

    /// Every request seen so far, in the order they arrived.
    pub fn requests(&self) -> Vec<RequestLog> {
        lock(&self.shared.log).clone()
    }

    /// How many requests got a fault.
    pub fn injected(&self) -> usize {
        self.shared.injected.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // accept() blocks: a connection of our own wakes it to see the flag.
        let _ = TcpStream::connect_timeout(&self.addr, CONNECT_TIMEOUT);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// The state the accept thread, connection threads and the test share.
struct Shared {
    upstream: SocketAddr,
    rules: Mutex<Vec<RuleState>>,
    log: Mutex<Vec<RequestLog>>,
    injected: AtomicUsize,
    rate_limited_until: Mutex<Option<Instant>>,
    stopping: AtomicBool,
}

struct RuleState {
    rule: Rule,
    /// Requests this rule has matched so far.
    matched: usize,
}

impl Shared {
    /// The fault for this request, if any, updating rule counts and the
    /// rate-limit window.
    fn decide(&self, method: &str, target: &str) -> Option<Fault> {
        let now = Instant::now();
        let mut window = lock(&self.rate_limited_until);
        if let Some(until) = *window {
            if now < until {
                let left = until - now;
                // Whole seconds, rounded up so a client that waits this long
                // is past the window.
                let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
                return Some(self.count(Fault::RateLimit {
                    retry_after_secs: secs.max(1),
                }));
            }
            *window = None;
        }
        let mut rules = lock(&self.rules);
        for state in rules.iter_mut() {
            if !state.rule.matches(method, target) {
                continue;
            }
            state.matched += 1;
            let applies = state.matched > state.rule.skip
                && state.matched <= state.rule.skip + state.rule.times;
            if applies {
                if let Fault::RateLimit { retry_after_secs } = state.rule.fault {
                    *window = Some(now + Duration::from_secs(retry_after_secs));
                }
                return Some(self.count(state.rule.fault.clone()));
            }
        }
        None
    }

    fn count(&self, fault: Fault) -> Fault {
        self.injected.fetch_add(1, Ordering::SeqCst);
        fault
    }

    /// Log a request; returns its index for [`Shared::set_status`].
    fn log_request(&self, method: String, path: String, fault: Option<Fault>) -> usize {
        let mut log = lock(&self.log);
        log.push(RequestLog {
            method,
            path,
            status: None,
            fault,
        });
        log.len() - 1
    }

    /// Record the status a request got. Called before the client can see
    /// the answer, so a test reading the log after its request finished
    /// finds it there.
    fn set_status(&self, entry: usize, status: Option<u16>) {
        lock(&self.log)[entry].status = status;
    }
}

/// A lock that survives a panicked connection thread: the data it guards
/// stays consistent (each update is a single step).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for client in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            break;
        }
        // A failed accept (the client gave up already) concerns one client.
        let Ok(client) = client else { continue };
        let shared = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name("fault-proxy-conn".into())
            .spawn(move || serve_connection(&shared, client));
        if let Err(e) = spawned {
            eprintln!("fault proxy: cannot spawn a connection thread: {e}");
        }
    }
}
