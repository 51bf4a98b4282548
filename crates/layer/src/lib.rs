//! Layers: turning a changed filesystem into an OCI layer blob and back.

pub mod digest;
