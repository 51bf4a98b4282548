//! The snapshot API as the seed's SDK uses it: a snapshot from Dockerfile
//! *text* and a context dir (`build_info={"dockerfile": TEXT, "context":
//! PATH}`), kept in the record; a sandbox asked for by language starting
//! from the general snapshot the operator's table names. As root and again
//! as the unprivileged test user (harness = false: `main` calls the init hook).

use cairn_registry::{Regions, Registry, RegistryOptions};
use cairn_sandbox::manager::{CreateOptions, SandboxManager};
use cairn_sandbox::{init_hook, Launcher};
use cairn_snapshot::service::{general_local_name, local_name};
use cairn_snapshot::{
    CreateRequest, LanguageSnapshots, NewSnapshot, Resources, SnapshotRepo, SnapshotService,
    SnapshotState, Source,
};
use cairn_store::Store;
use std::collections::BTreeMap;

struct Fixture {
    tmp: tempfile::TempDir,
    store: Store,
    registry: Registry,
}

impl Fixture {
    fn service(&self) -> SnapshotService<'_> {
        SnapshotService::open(
            &self.store,
            Launcher::current_exe().unwrap(),
            &self.registry,
            Regions::default(),
        )
        .unwrap()
    }
}

fn dockerfile_text_with_a_context_dir(f: &Fixture) {
    let ctx = f.tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("app.txt"), "hello\n").unwrap();
    let text = "FROM busybox:fixture\nCOPY app.txt /app/\nRUN cat /app/app.txt > /app/copy\n";
    let svc = f.service();
    let snap = svc
        .create(
            "acme",
            Source::DockerfileText {
                dockerfile: text.into(),
                context: ctx.clone(),
                build_args: BTreeMap::new(),
            },
            CreateRequest {
                name: "from-text:1.0.0".into(),
                ..CreateRequest::default()
            },
            &mut |_| {},
        )
        .unwrap();
    assert_eq!(snap.state, SnapshotState::Active);
    let info = snap.build_info.as_ref().unwrap();
    assert_eq!(info.source_kind, "dockerfile");
    assert_eq!(info.dockerfile.as_deref(), Some(text));
    assert_eq!(info.context, vec![ctx.display().to_string()]);
    assert!(info.context_digest.is_some());
    // The record as stored says the same.
    let again = svc.get("acme", "from-text:1.0.0").unwrap();
    assert_eq!(again.build_info.unwrap().context, info.context);

    // With a Dockerfile, the entrypoint belongs in it.
    let err = svc
        .create(
            "acme",
            Source::DockerfileText {
                dockerfile: text.into(),
                context: ctx.clone(),
                build_args: BTreeMap::new(),
            },
            CreateRequest {
                name: "with-ep".into(),
                entrypoint: Some(vec!["sh".into()]),
                ..CreateRequest::default()
            },
            &mut |_| {},
        )
        .unwrap_err();
    assert!(err.is_bad_input());
    assert!(
        err.to_string().contains("put ENTRYPOINT in the Dockerfile"),
        "{err}"
    );
    let err = svc
        .create(
            "acme",
            Source::DockerfileText {
                dockerfile: text.into(),
                context: ctx.join("missing"),
                build_args: BTreeMap::new(),
            },
            CreateRequest {
                name: "no-ctx".into(),
                ..CreateRequest::default()
            },
            &mut |_| {},
        )
        .unwrap_err();
    assert!(err.is_bad_input(), "{err}");
}

fn language_selects_a_general_snapshot(f: &Fixture) {
    // The operator's general snapshot, recorded active over an image already
    // in the store, under the general snapshots' own image namespace.
    let manifest = f.store.resolve("busybox:fixture").unwrap();
    let general_name = general_local_name("python:3.11").unwrap();
    f.store.tag(&general_name, &manifest).unwrap();
    let mut repo = SnapshotRepo::open(&f.store.layout().meta_db()).unwrap();
    let new = |name: &str, general: bool| NewSnapshot {
        name: name.into(),
        organization_id: "operator".into(),
        general,
        image_name: match general {
            true => general_local_name(name),
            false => local_name("operator", name),
        }
        .unwrap()
        .to_string(),
        entrypoint: vec!["sleep".into(), "30".into()],
        resources: Resources::default(),
        build_info: None,
        region_ids: vec![],
    };
    let general = repo
        .create(new("python:3.11", true), SnapshotState::Active)
        .unwrap();
    f.store
        .tag(&local_name("operator", "private:1").unwrap(), &manifest)
        .unwrap();
    repo.create(new("private:1", false), SnapshotState::Active)
        .unwrap();
    drop(repo);
    let table = LanguageSnapshots::parse("python = python:3.11\nnode = private:1\n").unwrap();
    let svc = f.service().with_languages(table);
    assert_eq!(
        svc.language_snapshot("acme", "Python").unwrap().id,
        general.id
    );
    let (snap, sandbox) = svc
        .start_sandbox_for_language("acme", "python", None, CreateOptions::default())
        .unwrap();
    assert_eq!(snap.id, general.id);
    assert!(snap.last_used_at.is_some());
    SandboxManager::new(&f.store, Launcher::current_exe().unwrap())
        .remove(&sandbox.id)
        .unwrap();
    // Not in the table, or mapped to what acme cannot see as general: refused.
    let err = svc.language_snapshot("acme", "rust").unwrap_err();
    assert!(
        err.is_bad_input() && err.to_string().contains("python"),
        "{err}"
    );
    assert!(svc
        .language_snapshot("acme", "node")
        .unwrap_err()
        .is_bad_input());
    assert!(svc
        .language_snapshot("operator", "node")
        .unwrap_err()
        .is_bad_input());
}

fn main() {
    init_hook();
    let tmp = tempfile::tempdir().unwrap();
    let store = cairn_testsupport::store_with_busybox(tmp.path());
    let registry = Registry::new(RegistryOptions::from_env()).unwrap();
    let fixture = Fixture {
        tmp,
        store,
        registry,
    };
    cairn_testsupport::run_suite(
        fixture,
        cairn_testsupport::test_cases![Fixture;
            dockerfile_text_with_a_context_dir,
            language_selects_a_general_snapshot,
        ],
    )
}
