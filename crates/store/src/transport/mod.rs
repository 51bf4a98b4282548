//! Moving images in and out of the store: OCI layout dirs (`oci:DIR[:REF]`),
//! OCI archives (`oci-archive:FILE[:REF]`, a tar of a layout) and Docker
//! archives (`docker-archive:FILE[:NAME]`, what `docker save` writes).

mod copy;
mod docker_archive;
mod oci_archive;
mod oci_dir;
mod tar_entry;

use crate::error::{Result, StoreError};
use crate::reference::ImageRef;
use crate::{Digest, Store};
use cairn_layer::ExtractLimits;
use std::path::PathBuf;

/// Where images come from or go to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    /// An OCI image layout directory; the optional ref selects/sets
    /// `org.opencontainers.image.ref.name`.
    OciDir {
        path: PathBuf,
        reference: Option<String>,
    },
    /// A tar of an OCI image layout.
    OciArchive {
        path: PathBuf,
        reference: Option<String>,
    },
    /// A `docker save` archive; the optional name is the RepoTag written on export.
    DockerArchive {
        path: PathBuf,
        reference: Option<String>,
    },
}

impl Transport {
    /// Parse `oci:DIR[:REF]`, `oci-archive:FILE[:REF]`, `docker-archive:FILE[:REF]`.
    /// As in containers/image, the path ends at the first ':' after the prefix,
    /// so a REF may itself hold colons (`oci:out:docker.io/library/x:1`).
    pub fn parse(input: &str) -> Result<Self> {
        let bad = |reason: &str| StoreError::BadTransport {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        let (kind, rest) = input.split_once(':').ok_or_else(|| {
            bad("expected oci:DIR[:REF], oci-archive:FILE[:REF] or docker-archive:FILE[:REF]")
        })?;
        let (path, reference) = match rest.split_once(':') {
            Some((p, r)) => (p, Some(r.to_string())),
            None => (rest, None),
        };
        if path.is_empty() {
            return Err(bad("the path is empty"));
        }
        if reference.as_deref() == Some("") {
            return Err(bad("the reference after the path is empty"));
        }
        let path = PathBuf::from(path);
        match kind {
            "oci" => Ok(Transport::OciDir { path, reference }),
            "oci-archive" => Ok(Transport::OciArchive { path, reference }),
            "docker-archive" => Ok(Transport::DockerArchive { path, reference }),
            _ => Err(bad(
                "unknown transport; use oci:, oci-archive: or docker-archive:",
            )),
        }
    }
}

/// One image an import brought in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Imported {
    /// The manifest (or index) digest.
    pub digest: Digest,
    /// The tags set for it (none if the source named it nothing and no name was given).
    pub names: Vec<ImageRef>,
}

impl Store {
    /// Import images from `source`. `name` tags the (single) imported image,
    /// overriding the names the source carries. Every blob is verified; the
    /// images are recorded and tagged only at the end, so a failed import
    /// leaves no name behind (verified blobs may stay, unnamed, for GC).
    pub fn import(&self, source: &Transport, name: Option<&ImageRef>) -> Result<Vec<Imported>> {
        let limits = ExtractLimits::from_env().map_err(|e| StoreError::BadSize {
            input: e.value.clone(),
            reason: format!("{}: {}", e.variable, e.reason),
        })?;
        self.import_with_limits(source, name, &limits)
    }

    /// [`Store::import`] with explicit caps on archive sources (size as the
    /// sum of entry sizes, entries, extension headers) instead of the
    /// defaults with `CAIRN_MAX_EXTRACT_SIZE`/`_ENTRIES` applied.
    pub fn import_with_limits(
        &self,
        source: &Transport,
        name: Option<&ImageRef>,
        limits: &ExtractLimits,
    ) -> Result<Vec<Imported>> {
        let found = match source {
            Transport::OciDir { path, reference } => {
                oci_dir::import(self, path, reference.as_deref())?
            }
            Transport::OciArchive { path, reference } => {
                oci_archive::import(self, path, reference.as_deref(), limits)?
            }
            Transport::DockerArchive { path, reference } => {
                docker_archive::import(self, path, reference.as_deref(), limits)?
            }
        };
        let source_name = format!("{source:?}");
        let mut out: Vec<Imported> = found
            .into_iter()
            .map(|(digest, names)| Imported { digest, names })
            .collect();
        if let Some(name) = name {
            if out.len() != 1 {
                return Err(StoreError::BadSource {
                    source_name,
                    reason: format!(
                        "holds {} images; a NAME can only be given for one",
                        out.len()
                    ),
                });
            }
            out[0].names = vec![name.clone()];
        }
        let tags: Vec<(ImageRef, Digest)> = out
            .iter()
            .flat_map(|i| i.names.iter().map(move |n| (n.clone(), i.digest)))
            .collect();
        if !tags.is_empty() {
            self.tag_many(&tags)?;
        }
        Ok(out)
    }

    /// Export the image `image` (a name or digest in the store) to `dest`.
    /// The output appears whole or not at all (written under a temp name,
    /// then renamed; for a layout dir, index.json is written last).
    pub fn export(&self, image: &str, dest: &Transport) -> Result<Digest> {
        let digest = self.resolve(image)?;
        let default_ref = ImageRef::parse(image)
            .ok()
            .filter(|r| r.tag().is_some() && input_is_name(image));
        match dest {
            Transport::OciDir { path, reference } => {
                let r = reference.clone().or(default_ref.map(|r| r.to_string()));
                oci_dir::export(self, &digest, path, r.as_deref())?
            }
            Transport::OciArchive { path, reference } => {
                let r = reference.clone().or(default_ref.map(|r| r.to_string()));
                oci_archive::export(self, &digest, path, r.as_deref())?
            }
            Transport::DockerArchive { path, reference } => {
                let r = match reference {
                    Some(r) => Some(ImageRef::parse(r)?),
                    None => default_ref,
                };
                docker_archive::export(self, &digest, path, r.as_ref())?
            }
        }
        Ok(digest)
    }
}

fn input_is_name(input: &str) -> bool {
    input.parse::<Digest>().is_err()
}

/// Turn a source's ref name into a store name. Only a ref that reads as an
/// image name, i.e. has a '/' or a ':' (`docker.io/library/busybox:latest`,
/// `team/app`, `app:v1`), names the image. A bare word (`latest`, `v1.2`,
/// `busybox`) is what skopeo and buildah write for `oci:DIR:TAG`: a tag with
/// no repository, so it names nothing and the caller must give a NAME.
pub(crate) fn name_from_ref(ref_name: &str) -> Option<ImageRef> {
    if !ref_name.contains('/') && !ref_name.contains(':') {
        return None;
    }
    ImageRef::parse(ref_name).ok().filter(|r| r.tag().is_some())
}
