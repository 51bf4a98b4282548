//! The layer sink of pulls that unpack: a pull (`cairn pull`, a snapshot
//! from an image, a registry cache import) hands each layer to it, and it
//! extracts the layer into the store's layer dirs in a helper task, from
//! the download itself when it can (see `cairn_registry::LayerSink`).

use cairn_registry::{LayerFeed, LayerSink, StreamTicket};
use cairn_sandbox::manager::{ExtractedDir, PendingExtract, SandboxManager};
use cairn_store::Digest;

/// Extracts pulled layers through its manager (rootless: in a helper task),
/// so a sandbox or build from the image starts without waiting for it.
pub struct Extractor<'a>(pub SandboxManager<'a>);

impl LayerSink for Extractor<'_> {
    fn layer_ready(&self, blob: &Digest, diff_id: &Digest) -> Result<(), String> {
        self.0
            .extract_layers(&[(*blob, *diff_id)])
            .map_err(|e| e.to_string())
    }

    fn begin_stream(
        &self,
        blob: &Digest,
        diff_id: &Digest,
    ) -> Result<Option<(LayerFeed, StreamTicket)>, String> {
        let started = self
            .0
            .begin_extract(blob, diff_id)
            .map_err(|e| e.to_string())?;
        Ok(started.map(|(pipe, pending)| {
            let feed: LayerFeed = Box::new(pipe);
            (feed, StreamTicket(Box::new(pending)))
        }))
    }

    fn end_stream(
        &self,
        ticket: StreamTicket,
        verified: bool,
    ) -> Result<Option<StreamTicket>, String> {
        let pending = ticket
            .0
            .downcast::<PendingExtract>()
            .map_err(|_| "a stream ticket of another sink".to_string())?;
        let kept = self
            .0
            .end_extract(*pending, verified)
            .map_err(|e| e.to_string())?;
        Ok(kept.map(|dir| StreamTicket(Box::new(dir))))
    }

    fn adopt(&self, kept: Vec<StreamTicket>) -> Result<(), String> {
        let dirs = kept
            .into_iter()
            .filter_map(|t| t.0.downcast::<ExtractedDir>().ok().map(|d| *d))
            .collect();
        self.0.adopt_extracted(dirs).map_err(|e| e.to_string())
    }
}
