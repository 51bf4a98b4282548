//! `cairn login`'s check: are these credentials good for this registry?
//! `oci-client` only learns that on the first real request, so this asks the
//! registry's `/v2/` endpoint directly, following a Bearer challenge to its
//! token service as `docker login` does.

use crate::error::{RegistryError, Result, Target};
use crate::session::{is_loopback, RegistryOptions};
use std::time::Duration;

pub(crate) async fn check(
    opts: &RegistryOptions,
    registry: &str,
    username: &str,
    password: &str,
) -> Result<()> {
    let host = if registry == "docker.io" {
        "index.docker.io"
    } else {
        registry
    };
    let insecure = opts.is_insecure(registry);
    let scheme = if insecure && is_loopback(registry) {
        "http"
    } else {
        "https"
    };
    let target = Target {
        registry: registry.to_string(),
        repository: String::new(),
        what: "login".into(),
    };
    let transport = |e: reqwest::Error| RegistryError::Transport {
        target: target.clone(),
        message: e.to_string(),
    };
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(insecure)
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(transport)?;
    let mut res = client
        .get(format!("{scheme}://{host}/v2/"))
        .basic_auth(username, Some(password))
        .send()
        .await;
    if res.is_err() && insecure && scheme == "https" {
        res = client
            .get(format!("http://{host}/v2/"))
            .basic_auth(username, Some(password))
            .send()
            .await;
    }
    let res = res.map_err(transport)?;
    let status = res.status().as_u16();
    if status == 200 {
        return Ok(());
    }
    let denied = |status: u16| RegistryError::Denied {
        target: target.clone(),
        status,
        hint: format!("; user {username:?} and this password were rejected"),
    };
    if status != 401 {
        return Err(RegistryError::Status {
            target: target.clone(),
            status,
            message: "unexpected answer to GET /v2/".into(),
        });
    }
    let challenge = res
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let Some(params) = challenge.strip_prefix("Bearer ") else {
        return Err(denied(401));
    };
    let realm = challenge_param(params, "realm").ok_or_else(|| denied(401))?;
    let mut req = client.get(&realm).basic_auth(username, Some(password));
    if let Some(service) = challenge_param(params, "service") {
        req = req.query(&[("service", service)]);
    }
    let token = req.send().await.map_err(transport)?;
    match token.status().as_u16() {
        200 => Ok(()),
        s => Err(denied(s)),
    }
}

/// `key="value"` out of a WWW-Authenticate parameter list.
fn challenge_param(params: &str, key: &str) -> Option<String> {
    let mut rest = params;
    while !rest.is_empty() {
        let (k, after) = rest.split_once('=')?;
        let k = k.trim().trim_start_matches(',').trim();
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"')?;
            (&q[..end], &q[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        if k.eq_ignore_ascii_case(key) {
            return Some(value.to_string());
        }
        rest = next.trim_start_matches(',');
    }
    None
}

#[cfg(test)]
mod tests {
    use super::challenge_param;

    #[test]
    fn challenge_params() {
        let p = r#"realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a:pull""#;
        assert_eq!(
            challenge_param(p, "realm").as_deref(),
            Some("https://auth.example.com/token")
        );
        assert_eq!(
            challenge_param(p, "service").as_deref(),
            Some("registry.example.com")
        );
        assert_eq!(challenge_param(p, "nope"), None);
        assert_eq!(
            challenge_param("realm=plain,service=s", "service").as_deref(),
            Some("s")
        );
    }

    /// The header comes from the network: no input may panic. Random
    /// strings over the characters that matter, plus truncations of a real one.
    #[test]
    fn challenge_params_never_panic() {
        let alphabet: Vec<char> = "=\",, aéΩrealmservice\\".chars().collect();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 24) as usize;
            let s: String = (0..len)
                .map(|i| alphabet[((x >> (i % 50)) as usize + i) % alphabet.len()])
                .collect();
            let _ = challenge_param(&s, "realm");
            let _ = challenge_param(&s, "service");
        }
        let real = r#"realm="https://a/token",service="reg",scope="x""#;
        for end in 0..=real.len() {
            let _ = challenge_param(&real[..end], "service");
        }
    }
}
