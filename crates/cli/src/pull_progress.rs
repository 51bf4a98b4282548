//! Transfer bars for `pull` and `push` on a terminal: one line per blob (bytes, bar,
//! rate) redrawn in place at most ten times a second, and a total line.
//! Not on a pipe or with `--quiet`: the summary line says it all there.

use cairn::registry::PullProgress;
use cairn::store::size::format_size;
use cairn::store::Digest;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const MAX_LINES: usize = 12;
const BAR: usize = 24;

struct Blob {
    digest: Digest,
    done: u64,
    total: u64,
}

struct State {
    blobs: Vec<Blob>,
    drawn: usize,
    last_draw: Option<Instant>,
}

pub struct TransferView {
    started: Instant,
    state: Mutex<State>,
}

impl TransferView {
    /// A view when stderr is a terminal and progress is wanted.
    pub fn new(quiet: bool) -> Option<TransferView> {
        (!quiet && std::io::stderr().is_terminal()).then(|| TransferView {
            started: Instant::now(),
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
            self.draw(&mut s);
        }
    }

    fn draw(&self, s: &mut State) {
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let mut out = String::new();
        if s.drawn > 0 {
            out.push_str(&format!("\x1b[{}A", s.drawn));
        }
        let skip = s.blobs.len().saturating_sub(MAX_LINES);
        let mut lines = 0;
        for b in &s.blobs[skip..] {
            let hex = b.digest.to_string();
            let short = hex.strip_prefix("sha256:").unwrap_or(&hex);
            let frac = if b.total == 0 {
                1.0
            } else {
                b.done as f64 / b.total as f64
            };
            let full = ((frac.clamp(0.0, 1.0)) * BAR as f64) as usize;
            let state = if b.done >= b.total { "done" } else { "    " };
            out.push_str(&format!(
                "\x1b[2K{}: [{}{}] {:>10} / {:<10} {state}\n",
                &short[..12.min(short.len())],
                "=".repeat(full),
                " ".repeat(BAR - full),
                format_size(b.done),
                format_size(b.total),
            ));
            lines += 1;
        }
        let done: u64 = s.blobs.iter().map(|b| b.done).sum();
        let total: u64 = s.blobs.iter().map(|b| b.total).sum();
        out.push_str(&format!(
            "\x1b[2Ktotal: {} / {}  {}/s  {:.1}s\n",
            format_size(done),
            format_size(total),
            format_size((done as f64 / secs) as u64),
            secs
        ));
        s.drawn = lines + 1;
        s.last_draw = Some(Instant::now());
        let mut err = std::io::stderr().lock();
        // A terminal that went away has no one left to show progress to.
        let _ = err.write_all(out.as_bytes()).and_then(|()| err.flush());
    }
}

impl PullProgress for TransferView {
    fn transferred(&self, blob: &Digest, done: u64, total: u64) {
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        match s.blobs.iter_mut().find(|b| &b.digest == blob) {
            Some(b) => {
                b.done = done;
                b.total = total;
            }
            None => s.blobs.push(Blob {
                digest: *blob,
                done,
                total,
            }),
        }
        let due = s
            .last_draw
            .is_none_or(|t| t.elapsed() >= Duration::from_millis(100));
        if due || done >= total {
            self.draw(&mut s);
        }
    }
}
