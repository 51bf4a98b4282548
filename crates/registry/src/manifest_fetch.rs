//! Manifests, indexes and configs read into memory, with a cap.
//!
//! `oci-client` reads a manifest response whole (`bytes()`), so a registry
//! that sends an endless body fills memory. This module does the GET itself
//! (with the client's token) and reads at most [`MAX_MANIFEST_SIZE`] bytes,
//! refusing a `Content-Length` over it before reading anything.

use crate::error::{RegistryError, Result, Target};
use crate::session::Session;
use oci_client::secrets::RegistryAuth;
use oci_client::{Reference, RegistryOperation};

/// containerd's `MaxManifestSize` (remotes/docker/resolver.go), so that what
/// containerd pulls, Cairn pulls: "4 * 1048 * 1048" bytes (about 4.2 MiB).
/// Also the cap on a config blob (it is held in memory the same way).
pub const MAX_MANIFEST_SIZE: u64 = 4 * 1048 * 1048;

/// GET the manifest `oref` names, accepting `accept`, reading at most
/// [`MAX_MANIFEST_SIZE`] bytes of body.
pub(crate) async fn get_manifest(
    sess: &Session,
    oref: &Reference,
    token: &PullToken,
    accept: &[&str],
    target: &Target,
) -> Result<Vec<u8>> {
    let reference = oref.digest().or(oref.tag()).unwrap_or("latest");
    let req = Get {
        kind: "manifests",
        reference,
        accept: Some(accept),
    };
    get_capped(sess, oref, token, req, target).await
}

/// GET the config blob `digest` of `oref`'s repository into memory, with
/// the manifests' cap (a config is held in memory the same way). The
/// caller checks its digest and size.
pub(crate) async fn get_config(
    sess: &Session,
    oref: &Reference,
    token: &PullToken,
    digest: &str,
    target: &Target,
) -> Result<Vec<u8>> {
    let req = Get {
        kind: "blobs",
        reference: digest,
        accept: None,
    };
    get_capped(sess, oref, token, req, target).await
}

/// A repository's pull token for the few requests that resolve an image
/// (manifest, an index's child, config), asked for once: oci-client's
/// `auth` GETs `/v2/` on every call when the registry issues no token (it
/// caches tokens only). Asked again after a failure (a retry).
#[derive(Default)]
pub(crate) struct PullToken(tokio::sync::OnceCell<Option<String>>);

impl PullToken {
    async fn get(
        &self,
        sess: &Session,
        oref: &Reference,
        target: &Target,
    ) -> Result<Option<String>> {
        self.0
            .get_or_try_init(|| async {
                sess.client
                    .auth(oref, &sess.auth, RegistryOperation::Pull)
                    .await
                    .map_err(|e| crate::retry::from_oci(e, target, &sess.auth_hint))
            })
            .await
            .cloned()
    }
}

/// What to GET: `/v2/<repository>/<kind>/<reference>`.
struct Get<'a> {
    kind: &'a str,
    reference: &'a str,
    accept: Option<&'a [&'a str]>,
}

/// GET `/v2/<repository>/<kind>/<reference>` with the client's token,
/// reading at most [`MAX_MANIFEST_SIZE`] bytes of body. A redirect (a blob
/// served from elsewhere) is followed by reqwest, which drops the
/// `Authorization` header when it leaves the registry's host.
async fn get_capped(
    sess: &Session,
    oref: &Reference,
    token: &PullToken,
    get: Get<'_>,
    target: &Target,
) -> Result<Vec<u8>> {
    let token = token.get(sess, oref, target).await?;
    let url = format!(
        "{}/v2/{}/{}/{}",
        sess.retrier.base_url,
        oref.repository(),
        get.kind,
        get.reference
    );
    let mut req = sess.http.get(&url);
    if let Some(accept) = get.accept {
        req = req.header(reqwest::header::ACCEPT, accept.join(", "));
    }
    req = match (token, &sess.auth) {
        (Some(token), _) => req.bearer_auth(token),
        (None, RegistryAuth::Basic(user, pass)) => req.basic_auth(user, Some(pass)),
        _ => req,
    };
    let transport = |e: reqwest::Error| RegistryError::Transport {
        target: target.clone(),
        message: crate::retry::describe_reqwest(&e),
    };
    let mut res = req.send().await.map_err(transport)?;
    let status = res.status().as_u16();
    if !res.status().is_success() {
        let body = read_capped(&mut res, 4096, target)
            .await
            .ok()
            .flatten()
            .unwrap_or_default();
        return Err(crate::retry::status_error(
            status,
            String::from_utf8_lossy(&body).into_owned(),
            target.clone(),
            &sess.auth_hint,
        ));
    }
    if res.content_length().is_some_and(|n| n > MAX_MANIFEST_SIZE) {
        return Err(too_large(target));
    }
    read_capped(&mut res, MAX_MANIFEST_SIZE, target)
        .await?
        .ok_or_else(|| too_large(target))
}

fn too_large(target: &Target) -> RegistryError {
    RegistryError::TooLarge {
        target: target.clone(),
        limit: MAX_MANIFEST_SIZE,
    }
}

/// The body, or `None` as soon as it passes `cap` bytes (memory stays at
/// most `cap` plus one chunk, however long the server keeps sending).
async fn read_capped(
    res: &mut reqwest::Response,
    cap: u64,
    target: &Target,
) -> Result<Option<Vec<u8>>> {
    let mut body = Vec::new();
    while let Some(chunk) = res.chunk().await.map_err(|e| RegistryError::Transport {
        target: target.clone(),
        message: crate::retry::describe_reqwest(&e),
    })? {
        if (body.len() + chunk.len()) as u64 > cap {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}
