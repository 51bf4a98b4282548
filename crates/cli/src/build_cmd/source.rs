//! Where `cairn build` finds its Dockerfile: `-f FILE`, `-f -` (standard
//! input), else `Dockerfile` in the context, else `Containerfile` (as
//! buildah and podman look).

use crate::exit::CliError;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The Dockerfile's text and the path it goes by (for messages and for
/// `<Dockerfile>.dockerignore`).
pub fn dockerfile(file: Option<&Path>, context: &Path) -> Result<(String, PathBuf), CliError> {
    if file.is_some_and(|f| f.as_os_str() == "-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| CliError::io("reading the Dockerfile from standard input", e))?;
        return Ok((text, context.join("Dockerfile")));
    }
    let path = match file {
        Some(f) => f.to_path_buf(),
        None => {
            let docker = context.join("Dockerfile");
            let container = context.join("Containerfile");
            if !docker.exists() && container.exists() {
                container
            } else {
                docker
            }
        }
    };
    match std::fs::read(&path) {
        // BuildKit reads Dockerfiles as bytes; invalid UTF-8 is replaced.
        Ok(bytes) => Ok((String::from_utf8_lossy(&bytes).into_owned(), path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && file.is_none() => {
            Err(CliError::bad_input(format!(
                "reading the Dockerfile: neither {} nor {} exists; is the context right, or is -f needed?",
                context.join("Dockerfile").display(),
                context.join("Containerfile").display()
            )))
        }
        Err(e) => Err(CliError::io(
            format!("reading the Dockerfile {}", path.display()),
            e,
        )),
    }
}
