//! A budget on what the tar reader may consume between two entries
//! (extraction here, archive import in the store).
//!
//! The extractor reads every entry's data itself, so whatever the tar reader
//! pulls from the stream while it looks for the next entry is headers: the
//! entry's own 512 bytes, padding, and extension records (PAX, GNU long
//! names, GNU sparse maps) that it holds in memory. The extractor arms the
//! meter with the cap before asking for the next entry and disarms it after;
//! a read past the cap fails, and the extractor reports the typed limit.

use std::cell::Cell;
use std::io::{self, Read};
use std::rc::Rc;

/// Slack over the cap for the entry's own header block and padding.
const SLACK: u64 = 2 * 512;

/// The shared state: remaining budget while armed, and whether it tripped.
#[derive(Clone, Default)]
pub struct Meter {
    remaining: Rc<Cell<Option<u64>>>,
    tripped: Rc<Cell<bool>>,
}

impl Meter {
    /// Allow `cap` bytes (plus a header block and padding) until [`Meter::disarm`].
    pub fn arm(&self, cap: Option<u64>) {
        self.remaining.set(cap.map(|c| c.saturating_add(SLACK)));
    }

    pub fn disarm(&self) {
        self.remaining.set(None);
    }

    /// Did a read fail because the budget ran out?
    pub fn tripped(&self) -> bool {
        self.tripped.get()
    }

    /// Wrap `inner` so its reads draw on this meter.
    pub fn reader<'r>(&self, inner: &'r mut dyn Read) -> MeteredReader<'r> {
        MeteredReader {
            inner,
            meter: self.clone(),
        }
    }
}

pub struct MeteredReader<'r> {
    inner: &'r mut dyn Read,
    meter: Meter,
}

impl Read for MeteredReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(left) = self.meter.remaining.get() else {
            return self.inner.read(buf);
        };
        if left == 0 {
            self.meter.tripped.set(true);
            return Err(io::Error::other("tar extension headers over the limit"));
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.meter.remaining.set(Some(left - n as u64));
        Ok(n)
    }
}
