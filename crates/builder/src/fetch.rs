//! `ADD <http(s) URL> <dest>`: the download and `--checksum`.
//!
//! BuildKit's rules (source/http and dockerfile2llb): the file is named
//! after the last segment of the URL's path (`__unnamed__` when it has
//! none; `Content-Disposition` is not used, as the Dockerfile frontend
//! passes the name explicitly), its mode is 0600 unless `--chmod`, its
//! owner root unless `--chown`, and its mtime the `Last-Modified` header
//! (the Unix epoch without one). A download is never extracted.
//!
//! Cache: with `--checksum` the step's key holds the checksum and the file
//! name, and nothing is fetched to compute it (a cached step makes no
//! request); without it the body is downloaded while the step is planned
//! and keyed by its sha256 and its `Last-Modified` (which becomes the
//! file's mtime, so it is part of the layer).
//!
//! The body is streamed to a file in the store's `tmp/` while it is hashed,
//! never held in memory. reqwest (already in the tree through oci-client)
//! does HTTP, TLS (rustls) and the proxy variables (`HTTP_PROXY`,
//! `HTTPS_PROXY`, `NO_PROXY`); a current-thread tokio runtime drives it for
//! the one request, as a build step is synchronous.

use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The name BuildKit gives a download whose URL path has no last segment.
const UNNAMED: &str = "__unnamed__";
/// Tries per download: transient failures (connection errors, 5xx, 408,
/// 429, a body cut short) are retried with a growing pause.
const ATTEMPTS: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest silence between two reads of the body: a stalled server fails
/// the step instead of hanging the build.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The URL does not parse.
    #[error("line {line}: ADD {url}: invalid URL: {message}")]
    InvalidUrl {
        line: usize,
        /// The Dockerfile, once the error reached its step (else empty).
        file: String,
        url: String,
        message: String,
    },
    /// The server answered with a status outside 2xx.
    #[error("line {line}: ADD {url}: the server answered HTTP {status}")]
    Status {
        line: usize,
        /// The Dockerfile, once the error reached its step (else empty).
        file: String,
        url: String,
        status: u16,
    },
    /// No answer: connection refused, DNS, TLS, timeout, a body cut short.
    #[error("line {line}: ADD {url}: {message}")]
    Transport {
        line: usize,
        /// The Dockerfile, once the error reached its step (else empty).
        file: String,
        url: String,
        message: String,
    },
    /// The body is not what `--checksum` pinned.
    #[error("line {line}: ADD {url}: checksum mismatch: expected {expected}, got {actual}")]
    ChecksumMismatch {
        line: usize,
        /// The Dockerfile, once the error reached its step (else empty).
        file: String,
        url: String,
        expected: String,
        actual: String,
    },
    /// The body is larger than the extraction size cap (`CAIRN_MAX_EXTRACT_SIZE`).
    #[error("line {line}: ADD {url}: the download is larger than the limit of {limit} bytes (raise it with CAIRN_MAX_EXTRACT_SIZE)")]
    TooLarge {
        line: usize,
        /// The Dockerfile, once the error reached its step (else empty).
        file: String,
        url: String,
        limit: u64,
    },
    #[error("line {line}: ADD {url}: writing {path}: {source}")]
    Io {
        line: usize,
        /// The Dockerfile, once the error reached its step (else empty).
        file: String,
        url: String,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl FetchError {
    /// The ADD's Dockerfile position, once the error reached its step.
    pub fn position(&self) -> Option<crate::Position> {
        let (file, line) = self.place();
        (!file.is_empty()).then(|| crate::Position::line(file.clone(), line))
    }

    /// The error with the Dockerfile it is about (its line it knows).
    pub(crate) fn in_file(mut self, name: &str) -> Self {
        match &mut self {
            FetchError::InvalidUrl { file, .. }
            | FetchError::Status { file, .. }
            | FetchError::Transport { file, .. }
            | FetchError::ChecksumMismatch { file, .. }
            | FetchError::TooLarge { file, .. }
            | FetchError::Io { file, .. } => *file = name.to_string(),
        }
        self
    }

    fn place(&self) -> (&String, usize) {
        match self {
            FetchError::InvalidUrl { file, line, .. }
            | FetchError::Status { file, line, .. }
            | FetchError::Transport { file, line, .. }
            | FetchError::ChecksumMismatch { file, line, .. }
            | FetchError::TooLarge { file, line, .. }
            | FetchError::Io { file, line, .. } => (file, *line),
        }
    }

    /// A bad URL or a 4xx (404, 401, 403, 410...) is the Dockerfile's fault;
    /// 408 and 429 are the server being busy, not the input being wrong.
    pub fn is_bad_input(&self) -> bool {
        match self {
            FetchError::InvalidUrl { .. } | FetchError::TooLarge { .. } => true,
            FetchError::Status { status, .. } => {
                (400..500).contains(status) && *status != 408 && *status != 429
            }
            _ => false,
        }
    }

    /// Worth another try: the same request may well succeed in a moment.
    fn is_transient(&self) -> bool {
        match self {
            FetchError::Transport { .. } => true,
            FetchError::Status { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            _ => false,
        }
    }
}

/// A pinned `--checksum`, normalised as `sha256:<64 lowercase hex>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Checksum(String);

impl Checksum {
    /// `sha256:<64 hex digits>` (BuildKit takes only lowercase hex, as the
    /// OCI digest grammar does); anything else is an error naming the value.
    pub(crate) fn parse(value: &str) -> Result<Checksum, String> {
        let malformed = || {
            format!("--checksum={value}: invalid checksum digest format, expected sha256:<64 lowercase hex digits>")
        };
        let (algorithm, hex) = value.split_once(':').ok_or_else(malformed)?;
        if algorithm != "sha256" {
            return Err(format!(
                "--checksum={value}: unsupported digest algorithm {algorithm:?}, only sha256 is"
            ));
        }
        let valid = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !valid {
            return Err(malformed());
        }
        Ok(Checksum(value.to_string()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// A source BuildKit fetches over HTTP (`isHTTPSource`): exact, lowercase
/// scheme, as it checks.
pub(crate) fn is_http_url(word: &str) -> bool {
    word.starts_with("http://") || word.starts_with("https://")
}

/// A source BuildKit takes for a git repository: `git@host:...`, `git://`,
/// `ssh://`, or an http(s) URL whose path ends in `.git` (a `#ref` after it
/// is allowed).
pub(crate) fn is_git_url(word: &str) -> bool {
    if ["git@", "git://", "ssh://"]
        .iter()
        .any(|p| word.starts_with(p))
    {
        return true;
    }
    if !is_http_url(word) {
        return false;
    }
    let without_fragment = word.split('#').next().unwrap_or(word);
    let path = without_fragment
        .split('?')
        .next()
        .unwrap_or(without_fragment);
    path.trim_end_matches('/').ends_with(".git")
}

/// `ADD --checksum`, checked as BuildKit does: a well-formed digest, one
/// source, and that source an http(s) URL (COPY has no such flag: the
/// parser refuses it).
pub(crate) fn checksum_flag(
    add: &cairn_dockerfile::typed::Add,
    expand: &dyn Fn(&str) -> Result<String, crate::BuildError>,
    at: &dyn Fn(String) -> crate::BuildError,
) -> Result<Option<Checksum>, crate::BuildError> {
    use cairn_dockerfile::typed::Source;
    let Some(value) = &add.checksum else {
        return Ok(None);
    };
    let checksum = Checksum::parse(&expand(value)?).map_err(at)?;
    let [source] = add.files.sources.as_slice() else {
        return Err(at(
            "--checksum can't be specified for multiple sources".into()
        ));
    };
    let source = match source {
        Source::Path(word) => expand(word)?,
        Source::Heredoc(name) => format!("<<{name}"),
    };
    if !is_http_url(&source) {
        return Err(at(format!(
            "--checksum can't be specified for non-HTTP(S) sources ({source:?})"
        )));
    }
    Ok(Some(checksum))
}

/// The file name a download gets: the last segment of the URL's path,
/// percent-decoded (Go's `path.Base(url.Path)`), never `.`, `..` or empty.
pub(crate) fn file_name(url: &reqwest::Url) -> String {
    let path = percent_decode(url.path());
    let base = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    match base {
        "" | "." | ".." => UNNAMED.to_string(),
        name => name.to_string(),
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                let value = hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0);
                out.push(value as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The URL as errors and logs show it: without a password.
fn redacted(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some("xxxxx"));
    }
    shown.to_string()
}

/// One `ADD` URL source, planned: what it is called in the image and what
/// keys it; with `--checksum`, nothing is fetched until the step runs.
pub(crate) struct UrlSource {
    url: reqwest::Url,
    /// The URL as errors show it.
    shown: String,
    /// The ADD's line in the Dockerfile, for errors.
    line: usize,
    /// The file's name in a destination dir.
    pub name: String,
    checksum: Option<Checksum>,
    /// The body, when planning had to fetch it (no `--checksum`).
    download: Option<Download>,
    /// Where bodies are downloaded to: the store's `tmp/`.
    tmp: PathBuf,
}

impl UrlSource {
    /// Plan `url`: with `checksum`, only parse it; without, download it now
    /// into `tmp` (the cache key needs the content's digest).
    pub(crate) fn plan(
        line: usize,
        url: &str,
        checksum: Option<Checksum>,
        tmp: &Path,
    ) -> Result<UrlSource, FetchError> {
        let parsed = reqwest::Url::parse(url).map_err(|e| FetchError::InvalidUrl {
            line,
            file: String::new(),
            url: url.to_string(),
            message: e.to_string(),
        })?;
        let mut source = UrlSource {
            name: file_name(&parsed),
            shown: redacted(&parsed),
            line,
            url: parsed,
            checksum,
            download: None,
            tmp: tmp.to_path_buf(),
        };
        if source.checksum.is_none() {
            source.download = Some(source.fetch()?);
        }
        Ok(source)
    }

    /// What the step's cache key holds for this source: the file name and
    /// the pinned checksum, or the fetched content's digest and
    /// Last-Modified (BuildKit's `formatCacheKey`).
    pub(crate) fn key_part(&self) -> String {
        match (&self.checksum, &self.download) {
            (Some(c), _) => format!("url\0{}\0{}\0", self.name, c.as_str()),
            (None, Some(d)) => format!("url\0{}\0{}\0{:?}\0", self.name, d.digest, d.last_modified),
            (None, None) => format!("url\0{}\0unfetched\0", self.name),
        }
    }

    /// Write the body to `to` (a path in the step's tree), mode 0600 unless
    /// `chmod`, mtime from Last-Modified (epoch 0 without one). Fetches now
    /// when planning did not (a `--checksum` step that missed the cache).
    pub(crate) fn write_to(&self, to: &Path, chmod: Option<u32>) -> Result<(), crate::BuildError> {
        let fetched;
        let download = match &self.download {
            Some(d) => d,
            None => {
                fetched = self.fetch()?;
                &fetched
            }
        };
        download.place(to).map_err(crate::BuildError::io(to))?;
        // Times before the mode: setting them opens the file, which a
        // --chmod=000 would forbid to a rootless caller.
        let mtime = std::time::UNIX_EPOCH
            + Duration::from_secs(download.last_modified.unwrap_or(0).max(0) as u64);
        std::fs::File::options()
            .write(true)
            .open(to)
            .and_then(|f| f.set_modified(mtime))
            .map_err(crate::BuildError::io(to))?;
        let mode = std::os::unix::fs::PermissionsExt::from_mode(chmod.unwrap_or(0o600));
        std::fs::set_permissions(to, mode).map_err(crate::BuildError::io(to))
    }

    /// Download with retries, verifying `--checksum` when there is one.
    fn fetch(&self) -> Result<Download, FetchError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| self.transport(format!("starting the HTTP runtime: {e}")))?;
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .user_agent(concat!("cairn/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| self.transport(describe(e)))?;
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        let download = loop {
            match runtime.block_on(self.fetch_once(&client, &self.tmp)) {
                Ok(d) => break d,
                Err(e) if e.is_transient() && attempt < ATTEMPTS => {
                    tracing::warn!("{e}; retrying in {backoff:?}");
                    std::thread::sleep(backoff);
                    backoff *= 2;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        };
        if let Some(expected) = &self.checksum {
            if download.digest != expected.as_str() {
                return Err(FetchError::ChecksumMismatch {
                    line: self.line,
                    file: String::new(),
                    url: self.shown.clone(),
                    expected: expected.as_str().to_string(),
                    actual: download.digest.clone(),
                });
            }
        }
        Ok(download)
    }

    /// One GET, its body streamed to a temporary file in `tmp` and hashed
    /// on the way.
    async fn fetch_once(
        &self,
        client: &reqwest::Client,
        tmp: &Path,
    ) -> Result<Download, FetchError> {
        let mut response = client
            .get(self.url.clone())
            .send()
            .await
            .map_err(|e| self.transport(describe(e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(FetchError::Status {
                line: self.line,
                file: String::new(),
                url: self.shown.clone(),
                status: status.as_u16(),
            });
        }
        let last_modified = response
            .headers()
            .get(reqwest::header::LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs() as i64);
        let io = |path: &Path| {
            let (line, url, path) = (self.line, self.shown.clone(), path.to_path_buf());
            move |source| FetchError::Io {
                line,
                file: String::new(),
                url,
                path,
                source,
            }
        };
        // Same cap as an archive's content; a bad variable was reported by
        // whatever read it first, so the default applies here.
        let limit = cairn_layer::ExtractLimits::from_env()
            .unwrap_or_default()
            .max_size;
        let too_large = |limit| FetchError::TooLarge {
            line: self.line,
            file: String::new(),
            url: self.shown.clone(),
            limit,
        };
        if let (Some(limit), Some(len)) = (limit, response.content_length()) {
            if len > limit {
                return Err(too_large(limit));
            }
        }
        let file = tempfile::Builder::new()
            .prefix("add-url-")
            .tempfile_in(tmp)
            .map_err(io(tmp))?;
        let path = file.path().to_path_buf();
        let mut writer = std::io::BufWriter::with_capacity(1 << 20, file);
        let mut hasher = Sha256::new();
        let mut received: u64 = 0;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.transport(describe(e)))?
        {
            received += chunk.len() as u64;
            if let Some(limit) = limit.filter(|l| received > *l) {
                return Err(too_large(limit)); // the temp file goes with `writer`
            }
            hasher.update(&chunk);
            writer.write_all(&chunk).map_err(io(&path))?;
        }
        let file = writer.into_inner().map_err(|e| io(&path)(e.into_error()))?;
        Ok(Download {
            path: file.into_temp_path(),
            digest: format!("sha256:{}", hex::encode(hasher.finalize())),
            last_modified,
        })
    }

    fn transport(&self, message: String) -> FetchError {
        FetchError::Transport {
            line: self.line,
            file: String::new(),
            url: self.shown.clone(),
            message,
        }
    }
}

/// A fetched body in the store's `tmp/`, removed when dropped.
struct Download {
    path: tempfile::TempPath,
    /// `sha256:<hex>` of the body.
    digest: String,
    /// Last-Modified, in seconds since the epoch.
    last_modified: Option<i64>,
}

impl Download {
    /// Move the body to `to` (the step's tree is in the same `tmp/`, so a
    /// rename; a copy across filesystems). The temporary path's own removal
    /// on drop then finds nothing, which it ignores.
    fn place(&self, to: &Path) -> std::io::Result<()> {
        if std::fs::rename(&self.path, to).is_ok() {
            return Ok(());
        }
        std::fs::copy(&self.path, to).map(|_| ())
    }
}

/// reqwest's Display hides the cause ("error sending request"): the chain
/// says what happened (connection refused, certificate, timeout).
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_format() {
        let good = format!("sha256:{}", "a".repeat(64));
        assert!(Checksum::parse(&good).is_ok());
        for bad in [
            "sha256:abc".to_string(),
            format!("sha256:{}", "A".repeat(64)),
            format!("sha256:{}", "g".repeat(64)),
            "a".repeat(64),
            format!("md5:{}", "a".repeat(32)),
            String::new(),
        ] {
            let err = Checksum::parse(&bad).unwrap_err();
            assert!(err.contains(&bad), "{err}");
        }
    }

    #[test]
    fn names_and_kinds_of_urls() {
        let name = |u: &str| file_name(&reqwest::Url::parse(u).unwrap());
        assert_eq!(name("https://example.com/a/b/tool.tar.gz"), "tool.tar.gz");
        assert_eq!(name("https://example.com/a/b/?x=1"), "b");
        assert_eq!(name("https://example.com/"), UNNAMED);
        assert_eq!(name("https://example.com"), UNNAMED);
        assert_eq!(name("https://example.com/my%20file"), "my file");
        assert_eq!(name("https://example.com/a/%2E%2E"), UNNAMED);
        assert!(is_git_url("https://github.com/moby/buildkit.git#v0.10.1"));
        assert!(is_git_url("git@github.com:moby/buildkit.git"));
        assert!(!is_git_url("https://example.com/file.tar.gz"));
        assert!(is_http_url("http://x/y") && !is_http_url("ftp://x/y"));
    }

    #[test]
    fn passwords_stay_out_of_messages() {
        let url = reqwest::Url::parse("https://user:secret@example.com/f").unwrap();
        let shown = redacted(&url);
        assert!(
            !shown.contains("secret") && shown.contains("user"),
            "{shown}"
        );
    }

    #[test]
    fn bad_input_statuses() {
        let status = |s| FetchError::Status {
            file: String::new(),
            line: 1,
            url: "u".into(),
            status: s,
        };
        assert!(status(404).is_bad_input() && !status(404).is_transient());
        assert!(!status(429).is_bad_input() && status(429).is_transient());
        assert!(!status(503).is_bad_input() && status(503).is_transient());
    }
}
