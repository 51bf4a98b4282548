//! Builds for an organization (`BuildRequest::organization`): a cached step
//! that used a secret is reused only by the organization that supplied it,
//! cache mounts are per organization, and another organization's snapshot
//! images cannot be a base. As root and again as the unprivileged test user
//! (harness = false: `main` calls the init hook).

mod common;

use cairn_builder::{BuildError, BuildResult, Builder, Secret};
use cairn_sandbox::{init_hook, Launcher};
use std::collections::BTreeMap;
use std::path::Path;

use common::Fixture;

impl Fixture {
    fn build_for(
        &self,
        context: &Path,
        org: Option<&str>,
        secret: Option<&[u8]>,
    ) -> Result<BuildResult, BuildError> {
        let mut req = common::request(context, "localhost/tenancy:latest");
        req.organization = org.map(str::to_string);
        let secrets: BTreeMap<String, Secret> = secret
            .map(|s| ("token".to_string(), Secret::Value(s.to_vec())))
            .into_iter()
            .collect();
        let builder =
            Builder::new(&self.store, Launcher::current_exe().unwrap()).with_secrets(secrets);
        builder.build(&req, &mut |_| {})
    }

    fn file(&self, result: &BuildResult, path: &str) -> String {
        let rootfs = common::unpack(&self.store, self.tmp.path(), &result.manifest.to_string());
        std::fs::read_to_string(rootfs.join(path)).unwrap()
    }
}

fn secret_steps_are_cached_per_organization(f: &Fixture) {
    let df =
        "FROM busybox:fixture\nRUN --mount=type=secret,id=token cat /run/secrets/token > /made\n";
    let ctx = f.context("secret", df, &[]);
    let acme = f
        .build_for(&ctx, Some("acme"), Some(b"acme-secret"))
        .unwrap();
    assert_eq!(common::ran_lines(&acme), [2]);
    // The same organization reuses it...
    let again = f
        .build_for(&ctx, Some("acme"), Some(b"acme-secret"))
        .unwrap();
    assert!(
        common::ran_lines(&again).is_empty(),
        "acme's rebuild ran again"
    );
    // ...another (ACME is another) runs it with its own secret.
    for other in ["evil", "ACME"] {
        let r = f
            .build_for(&ctx, Some(other), Some(b"other-secret"))
            .unwrap();
        assert_eq!(common::ran_lines(&r), [2], "{other} reused acme's step");
        assert_eq!(f.file(&r, "made"), "other-secret");
    }
    let r = f.build_for(&ctx, None, Some(b"operator")).unwrap();
    assert_eq!(
        common::ran_lines(&r),
        [2],
        "an unscoped build reused acme's step"
    );
    // A step without a secret is shared as before.
    let plain = f.context("plain", "FROM busybox:fixture\nRUN echo x > /x\n", &[]);
    f.build_for(&plain, Some("acme"), None).unwrap();
    let r = f.build_for(&plain, Some("evil"), None).unwrap();
    assert!(common::ran_lines(&r).is_empty());
}

fn cache_mounts_are_per_organization(f: &Fixture) {
    let df = "FROM busybox:fixture\nARG WHO\nRUN --mount=type=cache,target=/c,id=shared sh -c 'cat /c/note 2>/dev/null > /seen; echo $WHO >> /c/note'\n";
    let ctx = f.context("cache", df, &[]);
    let build = |org: &str| {
        let mut req = common::request(&ctx, "localhost/tenancy:latest");
        req.organization = Some(org.to_string());
        req.no_cache = true;
        req.build_args.insert("WHO".into(), org.into());
        let builder = Builder::new(&f.store, Launcher::current_exe().unwrap());
        builder.build(&req, &mut |_| {}).unwrap()
    };
    let first = build("acme");
    assert_eq!(f.file(&first, "seen"), "");
    let evil = build("evil");
    assert_eq!(f.file(&evil, "seen"), "", "evil saw acme's cache mount");
    let again = build("acme");
    assert_eq!(f.file(&again, "seen"), "acme\n");
}

fn another_organizations_base_is_refused(f: &Fixture) {
    let src = f.context("base", "FROM busybox:fixture\nRUN echo acme > /who\n", &[]);
    let mut req = common::request(&src, "localhost/snapshots/acme/web:latest");
    req.organization = Some("acme".into());
    Builder::new(&f.store, Launcher::current_exe().unwrap())
        .build(&req, &mut |_| {})
        .unwrap();
    let df = "FROM localhost/snapshots/acme/web:latest\n";
    let ctx = f.context("from", df, &[]);
    let err = f.build_for(&ctx, Some("evil"), None).unwrap_err();
    assert!(
        err.is_bad_input() && err.to_string().contains("another organization"),
        "{err}"
    );
    let r = f.build_for(&ctx, Some("acme"), None).unwrap();
    assert_eq!(f.file(&r, "who"), "acme\n");
    let err = f.build_for(&ctx, Some("../acme"), None).unwrap_err();
    assert!(
        err.is_bad_input() && err.to_string().contains("organization id"),
        "{err}"
    );
}

cairn_testsupport::suite_main![Fixture;
    secret_steps_are_cached_per_organization,
    cache_mounts_are_per_organization,
    another_organizations_base_is_refused,
];
