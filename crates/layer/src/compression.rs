//! Layer compressions, their OCI media types, and detection by magic bytes.

use crate::error::LayerError;
use std::fmt;
use std::str::FromStr;

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    #[default]
    Zstd,
    Gzip,
    None,
}

pub const MEDIA_TYPE_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MEDIA_TYPE_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MEDIA_TYPE_TAR_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

impl Compression {
    /// The OCI media type of a layer compressed this way.
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::Zstd => MEDIA_TYPE_TAR_ZSTD,
            Compression::Gzip => MEDIA_TYPE_TAR_GZIP,
            Compression::None => MEDIA_TYPE_TAR,
        }
    }

    /// The compression a media type names (OCI and Docker layer types), if any.
    pub fn from_media_type(media_type: &str) -> Option<Self> {
        match media_type {
            MEDIA_TYPE_TAR_ZSTD => Some(Compression::Zstd),
            MEDIA_TYPE_TAR_GZIP | "application/vnd.docker.image.rootfs.diff.tar.gzip" => {
                Some(Compression::Gzip)
            }
            MEDIA_TYPE_TAR | "application/vnd.docker.image.rootfs.diff.tar" => {
                Some(Compression::None)
            }
            _ => None,
        }
    }

    /// Detect the compression from the first bytes of a blob. Anything that is
    /// neither gzip nor zstd is taken as a plain tar (the tar reader then judges it).
    pub fn detect(head: &[u8]) -> Self {
        if head.starts_with(&ZSTD_MAGIC) {
            Compression::Zstd
        } else if head.starts_with(&GZIP_MAGIC) {
            Compression::Gzip
        } else {
            Compression::None
        }
    }

    /// The default level used when `LayerOptions::level` is `None`.
    pub fn default_level(self) -> i32 {
        match self {
            Compression::Zstd => 3,
            Compression::Gzip => 6,
            Compression::None => 0,
        }
    }
}

impl FromStr for Compression {
    type Err = LayerError;
    fn from_str(s: &str) -> Result<Self, LayerError> {
        match s {
            "zstd" => Ok(Compression::Zstd),
            "gzip" => Ok(Compression::Gzip),
            "none" => Ok(Compression::None),
            _ => Err(LayerError::Parse {
                what: "compression (expected zstd, gzip or none)",
                value: s.to_string(),
            }),
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::Zstd => "zstd",
            Compression::Gzip => "gzip",
            Compression::None => "none",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_media_types() {
        for c in [Compression::Zstd, Compression::Gzip, Compression::None] {
            assert_eq!(c.to_string().parse::<Compression>().unwrap(), c);
            assert_eq!(Compression::from_media_type(c.media_type()), Some(c));
        }
        assert!("xz".parse::<Compression>().is_err());
    }

    #[test]
    fn detect_by_magic() {
        assert_eq!(Compression::detect(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(Compression::detect(&ZSTD_MAGIC), Compression::Zstd);
        assert_eq!(Compression::detect(b"etc/\0\0"), Compression::None);
        assert_eq!(Compression::detect(&[]), Compression::None);
    }
}
