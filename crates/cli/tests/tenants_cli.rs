//! Organizations are a hard boundary, through the real binary: ids are used
//! exactly (`acme` and `ACME` never share an image), one organization's
//! snapshot images cannot be a source, a base or a `COPY --from` of
//! another's, sandboxes refuse other organizations, and general snapshots
//! are created, listed, used and deleted by the operator. As root and as the
//! unprivileged test user.

mod cli_env;

use cli_env::*;

fn project(env: &Env, name: &str, dockerfile: &str) -> String {
    let dir = env.context_dir(name, &[("Dockerfile", dockerfile)]);
    dir.join("Dockerfile").to_str().unwrap().to_string()
}

fn as_org(env: &Env, org: &str, args: &[&str]) -> std::process::Output {
    let mut a = vec!["snapshot", "--org", org];
    a.extend_from_slice(args);
    env.cairn(&a)
}

/// A snapshot `name` of `org` whose image holds `/who` = `who`.
fn make(env: &Env, org: &str, name: &str, who: &str) {
    let df = project(
        env,
        &format!("{org}-{name}"),
        &format!("FROM busybox:fixture\nRUN echo {who} > /who\n"),
    );
    ok(&as_org(env, org, &["create", name, "-f", &df]), "create");
}

/// `/who` in a new sandbox of `org`'s snapshot `key`; the sandbox id.
fn who(env: &Env, org: &str, key: &str) -> (String, String) {
    let out = as_org(env, org, &["sandbox", key]);
    let sb = ok(&out, "snapshot sandbox")
        .lines()
        .last()
        .unwrap()
        .to_string();
    let out = env.cairn(&["sandbox", "exec", &sb, "--", "cat", "/who"]);
    (ok(&out, "exec").trim().to_string(), sb)
}

fn bad(out: &std::process::Output, want: &str, what: &str) {
    assert_eq!(out.status.code(), Some(2), "{what}: {}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(want),
        "{what}: {}",
        text(&out.stderr)
    );
}

#[test]
fn acme_and_upper_acme_never_share_a_snapshot() {
    for user in users() {
        let env = Env::new(user);
        make(&env, "acme", "web", "acme");
        make(&env, "ACME", "web", "ACME-upper");
        assert_eq!(who(&env, "acme", "web").0, "acme");
        assert_eq!(who(&env, "ACME", "web").0, "ACME-upper");
        let get = |org| {
            let out = as_org(&env, org, &["get", "web", "--format", "json"]);
            let v: serde_json::Value = serde_json::from_str(&ok(&out, "get")).unwrap();
            (
                v["imageName"].as_str().unwrap().to_string(),
                v["organizationId"].clone(),
            )
        };
        let (a, b) = (get("acme"), get("ACME"));
        assert_ne!(a.0, b.0);
        assert_eq!(a.1, "acme");
        assert_eq!(b.1, "ACME");
        // Deleting one leaves the other whole.
        ok(&as_org(&env, "acme", &["delete", "web"]), "delete");
        assert_eq!(who(&env, "ACME", "web").0, "ACME-upper");
        // Keys that no snapshot can have are refused, never used as paths.
        for key in ["", "a b", "web\n", &"w".repeat(300)] {
            for cmd in ["get", "log", "delete"] {
                let out = as_org(&env, "ACME", &[cmd, key]);
                bad(&out, "cannot name a snapshot", cmd);
            }
        }
        // Ids that are not names are refused.
        for bad_org in ["../x", "", "a/b", "acme corp"] {
            let out = as_org(&env, bad_org, &["list"]);
            bad(&out, "organization id", bad_org);
        }
    }
}

#[test]
fn another_organizations_images_are_refused() {
    for user in users() {
        let env = Env::new(user);
        make(&env, "acme", "web", "acme");
        make(&env, "ACME", "web", "ACME-upper");
        let theirs = [
            "localhost/snapshots/acme/web:latest",
            "localhost/snapshots/acme/web",
        ];
        for image in theirs {
            let out = as_org(&env, "evil", &["create", "x", "-i", image]);
            bad(&out, "another organization", "-i");
            let out = as_org(&env, "evil", &["push", image, "--name", "x"]);
            bad(&out, "another organization", "push");
            // ACME is not acme either.
            let out = as_org(&env, "ACME", &["create", "x", "-i", image]);
            bad(&out, "another organization", "-i as ACME");
        }
        for (i, df) in [
            "FROM localhost/snapshots/acme/web:latest\n",
            "FROM busybox:fixture\nCOPY --from=localhost/snapshots/acme/web:latest /who /who\n",
            "FROM busybox:fixture\nRUN --mount=type=bind,from=localhost/snapshots/acme/web,target=/m cat /m/who\n",
        ]
        .iter()
        .enumerate()
        {
            let df = project(&env, &format!("evil-{i}"), df);
            let out = as_org(&env, "evil", &["create", &format!("x{i}"), "-f", &df]);
            assert_ne!(out.status.code(), Some(0), "{df}");
            let log = text(&out.stderr);
            assert!(log.contains("another organization"), "{df}: {log}");
        }
        // Knowing the digest does not open it either.
        let images: serde_json::Value =
            serde_json::from_str(&ok(&env.cairn(&["images", "--format", "json"]), "images"))
                .unwrap();
        let digest = images
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i.to_string().contains("localhost/snapshots/acme/web"))
            .and_then(|i| i["digest"].as_str())
            .expect("acme's image listed")
            .to_string();
        let pinned = format!("busybox@{digest}");
        for image in [digest.as_str(), pinned.as_str()] {
            let out = as_org(&env, "evil", &["push", image, "--name", "d"]);
            bad(&out, "another organization", "push by digest");
            let df = project(&env, "evil-pinned", &format!("FROM {image}\n"));
            let out = as_org(&env, "evil", &["create", "pinned", "-f", &df]);
            assert!(
                text(&out.stderr).contains("another organization"),
                "{}",
                text(&out.stderr)
            );
            ok(
                &as_org(&env, "evil", &["delete", "pinned"]),
                "delete failed",
            );
        }
        // The organization's own image is fine as a source and a base.
        ok(
            &as_org(&env, "acme", &["create", "copy", "-i", theirs[0]]),
            "own -i",
        );
        assert_eq!(who(&env, "acme", "copy").0, "acme");
        // A sandbox of acme's is not evil's to commit.
        let (_, sb) = who(&env, "acme", "web");
        let out = as_org(&env, "evil", &["commit", &sb, "--name", "stolen"]);
        bad(&out, "belongs to another organization", "commit");
        ok(
            &as_org(&env, "acme", &["commit", &sb, "--name", "mine"]),
            "own commit",
        );
    }
}

#[test]
fn general_snapshots_end_to_end() {
    for user in users() {
        let env = Env::new(user);
        let df = project(
            &env,
            "py",
            "FROM busybox:fixture\nRUN echo general > /who\n",
        );
        let out = as_org(
            &env,
            "platform",
            &["create", "py:3", "-f", &df, "--general"],
        );
        ok(&out, "create general");
        let list = |org| {
            let out = as_org(&env, org, &["list", "--format", "json"]);
            let v: serde_json::Value = serde_json::from_str(&ok(&out, "list")).unwrap();
            v["items"].as_array().unwrap().clone()
        };
        let items = list("acme");
        assert_eq!(items.len(), 1);
        assert_eq!(items[0]["general"], true);
        assert_eq!(items[0]["state"], "active");
        assert_eq!(who(&env, "acme", "py:3").0, "general");
        assert_eq!(who(&env, "other", "py").0, "general");
        // No organization changes it, not even its creator's.
        for org in ["acme", "platform"] {
            let out = as_org(&env, org, &["delete", "py:3"]);
            bad(&out, "general", "delete general as an org");
        }
        // An organization's own snapshot of that name wins over the general one.
        make(&env, "acme", "py:3", "acme-own");
        assert_eq!(who(&env, "acme", "py:3").0, "acme-own");
        assert_eq!(who(&env, "acme", "py").0, "acme-own");
        assert_eq!(who(&env, "other", "py:3").0, "general");
        // The operator deletes it; the organization's own stays.
        ok(
            &as_org(&env, "platform", &["delete", "--general", "py:3"]),
            "delete --general",
        );
        assert!(list("other").is_empty());
        assert_eq!(who(&env, "acme", "py:3").0, "acme-own");
        let out = as_org(&env, "other", &["get", "py:3"]);
        assert_eq!(out.status.code(), Some(2));
        ok(&env.cairn(&["fsck"]), "fsck");
    }
}
