//! Transfer progress for `pull` and `push`, one renderer for both.
//!
//! On a terminal: one line per blob (bar, bytes, rate) redrawn in place and a
//! total line. A redraw happens when a bar gains a cell or a blob ends, and
//! otherwise at most ten times a second (for the rates). Not on a terminal:
//! one plain line per blob as it ends, no escapes. With `--quiet`: nothing.

use cairn::registry::PullProgress;
use cairn::store::size::format_size;
use cairn::store::Digest;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const MAX_LINES: usize = 12;
const BAR: usize = 24;
const REDRAW: Duration = Duration::from_millis(100);

struct Blob {
    digest: Digest,
    done: u64,
    total: u64,
    started: Instant,
    /// When the blob ended, for its rate (and, on a pipe, its line was printed).
    ended: Option<Instant>,
}

impl Blob {
    fn cells(&self) -> usize {
        if self.total == 0 {
            return BAR;
        }
        ((self.done.min(self.total) as u128 * BAR as u128) / self.total as u128) as usize
    }

    fn short(&self) -> String {
        let hex = self.digest.to_string();
        let hex = hex.strip_prefix("sha256:").unwrap_or(&hex).to_string();
        hex.chars().take(12).collect()
    }

    fn seconds(&self) -> f64 {
        let end = self.ended.unwrap_or_else(Instant::now);
        end.duration_since(self.started).as_secs_f64().max(0.001)
    }

    fn rate(&self) -> String {
        format!(
            "{}/s",
            format_size((self.done as f64 / self.seconds()) as u64)
        )
    }
}

struct State {
    blobs: Vec<Blob>,
    drawn: usize,
    last_draw: Option<Instant>,
}

pub struct TransferView {
    started: Instant,
    /// Bars redrawn in place; else plain lines.
    terminal: bool,
    state: Mutex<State>,
}

impl TransferView {
    /// A view unless `quiet`: bars when stderr is a terminal, plain lines otherwise.
    pub fn new(quiet: bool) -> Option<TransferView> {
        (!quiet).then(|| TransferView {
            started: Instant::now(),
            terminal: std::io::stderr().is_terminal(),
            state: Mutex::new(State {
                blobs: Vec::new(),
                drawn: 0,
                last_draw: None,
            }),
        })
    }

    /// Draw the final state (every bar full or where it stopped).
    pub fn finish(&self) {
        if let Ok(mut s) = self.state.lock() {
            if self.terminal {
                self.draw(&mut s);
            }
        }
    }

    fn draw(&self, s: &mut State) {
        let mut out = String::new();
        if s.drawn > 0 {
            out.push_str(&format!("\x1b[{}A", s.drawn));
        }
        let skip = s.blobs.len().saturating_sub(MAX_LINES);
        for b in &s.blobs[skip..] {
            let full = b.cells();
            let state = if b.ended.is_some() { "done" } else { "" };
            out.push_str(&format!(
                "\x1b[2K{}: [{}{}] {:>10} / {:<10} {:>12} {state}\n",
                b.short(),
                "=".repeat(full),
                " ".repeat(BAR - full),
                format_size(b.done),
                format_size(b.total),
                b.rate(),
            ));
        }
        out.push_str(&self.total_line(&s.blobs));
        s.drawn = s.blobs.len() - skip + 1;
        s.last_draw = Some(Instant::now());
        write_stderr(&out);
    }

    fn total_line(&self, blobs: &[Blob]) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let done: u64 = blobs.iter().map(|b| b.done).sum();
        let total: u64 = blobs.iter().map(|b| b.total).sum();
        format!(
            "\x1b[2Ktotal: {} / {}  {}/s  {:.1}s\n",
            format_size(done),
            format_size(total),
            format_size((done as f64 / secs) as u64),
            secs
        )
    }
}

/// A terminal or pipe that went away has no one left to show progress to.
fn write_stderr(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes()).and_then(|()| err.flush());
}

impl PullProgress for TransferView {
    fn transferred(&self, blob: &Digest, done: u64, total: u64) {
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        let i = match s.blobs.iter().position(|b| &b.digest == blob) {
            Some(i) => i,
            None => {
                s.blobs.push(Blob {
                    digest: *blob,
                    done: 0,
                    total,
                    started: Instant::now(),
                    ended: None,
                });
                s.blobs.len() - 1
            }
        };
        let b = &mut s.blobs[i];
        let cells = b.cells();
        // A retried upload starts again from 0: so does its bar.
        b.done = done;
        b.total = total;
        let ended_now = done >= total && b.ended.is_none();
        if ended_now {
            b.ended = Some(Instant::now());
        }
        if !self.terminal {
            if ended_now {
                let line = format!(
                    "{}: {} in {:.1}s\n",
                    b.short(),
                    format_size(total),
                    b.seconds()
                );
                write_stderr(&line);
            }
            return;
        }
        let moved = b.cells() != cells;
        let due = s.last_draw.is_none_or(|t| t.elapsed() >= REDRAW);
        if due || moved || ended_now {
            self.draw(&mut s);
        }
    }
}
