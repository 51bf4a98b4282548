//! How `cairn build` shows the library's progress events on stderr, and how
//! SIGINT/SIGTERM cancel a build.

use cairn::build::{BuildEvent, CancelToken, OutputStream, StepOutcome};
use std::collections::{HashMap, VecDeque};
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `--progress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    /// A live view on a terminal, plain lines otherwise.
    Auto,
    /// One line per step, RUN output lines prefixed with their step.
    Plain,
    /// One JSON object per event and line.
    Json,
    /// Nothing (as `-q`): only the image digest on stdout.
    Quiet,
}

/// RUN output lines the live view keeps on screen.
const LIVE_TAIL: usize = 6;
/// Output lines kept per running step, shown when the build fails.
const FAILURE_TAIL: usize = 30;

pub struct Renderer {
    mode: ProgressMode,
    steps: usize,
    /// Plain: steps whose header line is printed, by (stage, line), with
    /// their number; the text of steps started.
    headed: HashMap<(usize, usize), usize>,
    started: HashMap<(usize, usize), String>,
    /// Live view: running steps, the last output lines, lines now on screen.
    running: Vec<((usize, usize), String, Instant)>,
    tail: VecDeque<((usize, usize), String)>,
    drawn: usize,
    /// Live view: recent output of each running step, for a failure.
    outputs: HashMap<(usize, usize), VecDeque<String>>,
    /// Live view: blobs of `FROM` pulls in flight, (done, total) bytes.
    transfers: Vec<(String, u64, u64)>,
    /// `--explain`: say why each step ran (JSON events always carry it).
    explain: bool,
}

/// What follows a finished step's header: cached, its time, and with
/// `--explain` why it ran or why a config step changed.
fn step_mark(
    outcome: &StepOutcome,
    duration: &Duration,
    reason: Option<&cairn::build::Reason>,
    explain: bool,
) -> String {
    let mark = match outcome {
        StepOutcome::Cached => " (cached)".to_string(),
        StepOutcome::Ran => format!(" ({:.2}s)", duration.as_secs_f64()),
        StepOutcome::Config => String::new(),
        StepOutcome::WouldRun => " (would run)".to_string(),
    };
    match reason.filter(|_| explain) {
        Some(reason) if *outcome == StepOutcome::Config => format!("{mark} (changed: {reason})"),
        Some(reason) => format!("{mark} (miss: {reason})"),
        None => mark,
    }
}

/// `sha256:0123456789ab [=====>    ]  12.0/25.0 MiB`
fn transfer_bar(blob: &str, done: u64, total: u64) -> String {
    const WIDTH: usize = 24;
    let filled = (done.saturating_mul(WIDTH as u64) / total.max(1)).min(WIDTH as u64) as usize;
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    format!(
        "{} [{}{}] {:6.1}/{:.1} MiB",
        clip(blob, 19),
        "=".repeat(filled),
        " ".repeat(WIDTH - filled),
        mib(done),
        mib(total)
    )
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

fn clip(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_string()
    } else {
        let mut s: String = text.chars().take(width.saturating_sub(1)).collect();
        s.push('…');
        s
    }
}

impl Renderer {
    pub fn new(mode: ProgressMode) -> Renderer {
        let mode = match mode {
            ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Auto,
            ProgressMode::Auto => ProgressMode::Plain,
            m => m,
        };
        Renderer {
            mode,
            steps: 0,
            headed: HashMap::new(),
            started: HashMap::new(),
            running: Vec::new(),
            tail: VecDeque::new(),
            drawn: 0,
            outputs: HashMap::new(),
            transfers: Vec::new(),
            explain: false,
        }
    }

    /// `--explain`: print why each step ran.
    pub fn with_explain(mut self, explain: bool) -> Renderer {
        self.explain = explain;
        self
    }

    pub fn event(&mut self, event: &BuildEvent) {
        match self.mode {
            ProgressMode::Json => {
                if let Ok(line) = serde_json::to_string(event) {
                    eprintln!("{line}");
                }
            }
            ProgressMode::Plain => self.plain(event),
            ProgressMode::Auto => self.live(event),
            ProgressMode::Quiet => {}
        }
    }

    /// Whether the live view is on (and so wants a clock ticking).
    pub fn is_live(&self) -> bool {
        self.mode == ProgressMode::Auto
    }

    /// Redraw the live view so that the running steps' clocks move while
    /// they are silent.
    pub fn tick(&mut self) {
        if self.mode == ProgressMode::Auto && !self.running.is_empty() {
            self.redraw(&[]);
        }
    }

    /// The header of a step, numbered when first printed.
    fn header(&mut self, stage: usize, line: usize, text: &str, mark: &str) -> String {
        let n = match self.headed.get(&(stage, line)) {
            Some(n) => *n,
            None => {
                self.steps += 1;
                self.headed.insert((stage, line), self.steps);
                self.steps
            }
        };
        format!(
            "[{n}] stage {stage} line {line}: {}{mark}",
            first_line(text)
        )
    }

    fn plain(&mut self, event: &BuildEvent) {
        match event {
            BuildEvent::StepStarted { stage, line, text } => {
                self.headed.remove(&(*stage, *line));
                self.started.insert((*stage, *line), text.clone());
            }
            BuildEvent::Output {
                stage,
                line,
                stream,
                text,
            } => {
                let key = (*stage, *line);
                if !self.headed.contains_key(&key) {
                    // The step runs and speaks: its header goes first.
                    let text = self.started.get(&key).cloned().unwrap_or_default();
                    let header = self.header(*stage, *line, &text, "");
                    eprintln!("{header}");
                }
                let n = self.headed.get(&key).copied().unwrap_or(0);
                let arrow = match stream {
                    OutputStream::Stdout => "|",
                    OutputStream::Stderr => "!",
                };
                eprintln!("[{n}] {arrow} {text}");
            }
            BuildEvent::StepDone {
                stage,
                line,
                text,
                outcome,
                duration,
                reason,
            } => {
                let mark = step_mark(outcome, duration, reason.as_ref(), self.explain);
                let header = self.header(*stage, *line, text, &mark);
                self.headed.remove(&(*stage, *line));
                self.started.remove(&(*stage, *line));
                eprintln!("{header}");
            }
            BuildEvent::Warning { message } => eprintln!("warning: {message}"),
            // One line per blob, when it is complete.
            BuildEvent::Transfer {
                stage,
                line,
                blob,
                done,
                total,
            } if done == total => {
                let key = (*stage, *line);
                if !self.headed.contains_key(&key) {
                    let text = self.started.get(&key).cloned().unwrap_or_default();
                    let header = self.header(*stage, *line, &text, "");
                    eprintln!("{header}");
                }
                let n = self.headed.get(&key).copied().unwrap_or_default();
                eprintln!(
                    "[{n}] pulled {}",
                    transfer_bar(&blob.to_string(), *done, *total)
                );
            }
            BuildEvent::Transfer { .. } => {}
            BuildEvent::StepCached { .. }
            | BuildEvent::LayerCommitted { .. }
            | BuildEvent::Finished { .. }
            | BuildEvent::Failed { .. } => {}
        }
    }

    fn live(&mut self, event: &BuildEvent) {
        let mut permanent: Vec<String> = Vec::new();
        match event {
            BuildEvent::StepStarted { stage, line, text } => {
                self.running.push((
                    (*stage, *line),
                    first_line(text).to_string(),
                    Instant::now(),
                ));
            }
            BuildEvent::Output {
                stage, line, text, ..
            } => {
                let key = (*stage, *line);
                let shown = format!("{stage}:{line} | {text}");
                self.tail.push_back((key, shown));
                while self.tail.len() > LIVE_TAIL {
                    self.tail.pop_front();
                }
                let out = self.outputs.entry(key).or_default();
                out.push_back(text.clone());
                while out.len() > FAILURE_TAIL {
                    out.pop_front();
                }
            }
            BuildEvent::StepDone {
                stage,
                line,
                text,
                outcome,
                duration,
                reason,
            } => {
                let key = (*stage, *line);
                self.running.retain(|(k, _, _)| *k != key);
                self.tail.retain(|(k, _)| *k != key);
                self.outputs.remove(&key);
                let mark = step_mark(outcome, duration, reason.as_ref(), self.explain);
                permanent.push(self.header(*stage, *line, text, &mark));
            }
            BuildEvent::Failed {
                cancelled: false, ..
            } => {
                // Show what the failing step(s) said.
                for ((stage, line), text, _) in std::mem::take(&mut self.running) {
                    permanent.push(format!("failed: stage {stage} line {line}: {text}"));
                    if let Some(out) = self.outputs.remove(&(stage, line)) {
                        permanent.extend(out.into_iter().map(|l| format!("  | {l}")));
                    }
                }
                self.tail.clear();
            }
            BuildEvent::Failed { .. } | BuildEvent::Finished { .. } => {
                self.running.clear();
                self.tail.clear();
            }
            BuildEvent::Warning { message } => permanent.push(format!("warning: {message}")),
            BuildEvent::Transfer {
                blob, done, total, ..
            } => {
                let blob = blob.to_string();
                self.transfers.retain(|(b, _, _)| *b != blob);
                if done < total {
                    self.transfers.push((blob, *done, *total));
                }
            }
            BuildEvent::StepCached { .. } | BuildEvent::LayerCommitted { .. } => return,
        }
        self.redraw(&permanent);
    }

    /// Erase the live area, print `permanent` above it, draw it again.
    fn redraw(&mut self, permanent: &[String]) {
        let mut err = std::io::stderr().lock();
        let mut out = String::new();
        if self.drawn > 0 {
            out.push_str(&format!("\x1b[{}F\x1b[J", self.drawn));
        }
        for line in permanent {
            out.push_str(line);
            out.push('\n');
        }
        let mut drawn = 0;
        for (key, text, since) in &self.running {
            out.push_str(&format!(
                "=> stage {} line {}: {} {:.1}s\n",
                key.0,
                key.1,
                clip(text, 70),
                since.elapsed().as_secs_f64()
            ));
            drawn += 1;
        }
        for (blob, done, total) in &self.transfers {
            out.push_str(&format!("   {}\n", transfer_bar(blob, *done, *total)));
            drawn += 1;
        }
        if !self.running.is_empty() {
            for (_, line) in &self.tail {
                out.push_str(&format!("   {}\n", clip(line, 100)));
                drawn += 1;
            }
        }
        self.drawn = drawn;
        let _ = err.write_all(out.as_bytes());
        let _ = err.flush();
    }

    /// Leave the terminal clean.
    pub fn finish(&mut self) {
        if self.mode == ProgressMode::Auto && self.drawn > 0 {
            self.transfers.clear();
            self.running.clear();
            self.tail.clear();
            self.redraw(&[]);
        }
    }
}

static SIGNALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    SIGNALLED.store(true, Ordering::SeqCst);
}

/// Whether SIGINT or SIGTERM arrived since the handlers were installed.
pub fn signalled() -> bool {
    SIGNALLED.load(Ordering::SeqCst)
}

/// Stops the watcher thread and restores the default handlers when dropped.
pub struct SignalWatch(Arc<AtomicBool>);

impl Drop for SignalWatch {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
        for sig in [libc::SIGINT, libc::SIGTERM] {
            set_handler(sig, libc::SIG_DFL);
        }
    }
}

fn set_handler(sig: libc::c_int, handler: libc::sighandler_t) {
    // SAFETY: a zeroed sigaction with an empty mask is valid; the handler we
    // install only stores to an atomic, which is async-signal-safe.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler;
        libc::sigemptyset(&mut action.sa_mask);
        action.sa_flags = libc::SA_RESTART;
        libc::sigaction(sig, &action, std::ptr::null_mut());
    }
}

/// SIGINT and SIGTERM cancel `token` (a watcher thread turns the signal
/// flag into a cancel; the handler itself only stores a flag).
pub fn install_signal_handlers(token: CancelToken) -> SignalWatch {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        set_handler(sig, on_signal as *const () as libc::sighandler_t);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let watching = stop.clone();
    std::thread::spawn(move || {
        while !watching.load(Ordering::SeqCst) {
            if SIGNALLED.load(Ordering::SeqCst) {
                token.cancel();
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    SignalWatch(stop)
}
