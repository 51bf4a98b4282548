//! Fidelity to BuildKit, round 2 (issue 15): ENV scope, `--chown=UID`,
//! the scratch config, `--chmod` with variables and symbolic modes, quoting
//! errors in stages a build does not reach, and the platform a build is for.
//! Checked on the built image, as root and again as the unprivileged test
//! user (harness = false: `main` calls the init hook).

mod common;

use cairn_builder::{BuildRequest, Builder};
use cairn_registry::Platform;
use cairn_sandbox::{init_hook, Launcher};
use serde_json::Value;
use std::path::Path;

use common::Fixture;

impl Fixture {
    fn builder(&self) -> Builder<'_> {
        Builder::new(&self.store, Launcher::current_exe().unwrap())
    }

    fn request(&self, context: &Path) -> BuildRequest {
        common::request(context, "localhost/fidelity:latest")
    }

    /// Build `dockerfile` (with `files`) and return the manifest digest.
    fn build_ok(&self, name: &str, dockerfile: &str, files: &[(&str, &str)]) -> String {
        let ctx = self.context(name, dockerfile, files);
        let result = self
            .builder()
            .build(&self.request(&ctx), &mut |_| {})
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        result.manifest.to_string()
    }

    fn config(&self, manifest: &str) -> Value {
        let (_, parsed) = self.store.manifest(&manifest.parse().unwrap()).unwrap();
        let digest = parsed.config.unwrap().digest;
        serde_json::from_slice(&self.store.read_blob_bytes(&digest).unwrap()).unwrap()
    }

    /// A file of the built image's filesystem, as `umoci unpack` reads it.
    fn file(&self, manifest: &str, path: &str) -> String {
        let root = common::unpack(&self.store, self.tmp.path(), manifest);
        std::fs::read_to_string(root.join(path.trim_start_matches('/')))
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    }
}

fn env_of(config: &Value) -> Vec<String> {
    config["config"]["Env"]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// Item 1: later instructions see the value an ENV *had*, expanded when it
/// was set, not the ENV text expanded again with later values.
fn env_scope_keeps_expanded_values(f: &Fixture) {
    let m = f.build_ok(
        "env-scope",
        "FROM busybox:fixture
ENV A=1 B=${A:-unset}
ENV C=${A}-${B}
ENV GREETING=\"hello ${NAME}\"
ENV NAME=other
LABEL g=\"${GREETING}\" c=\"${C}\"
WORKDIR /w-${C}
RUN echo \"$C|$GREETING\" > /run-env
",
        &[],
    );
    let cfg = f.config(&m);
    let env = env_of(&cfg);
    for want in ["B=unset", "C=1-unset", "GREETING=hello ", "NAME=other"] {
        assert!(env.contains(&want.to_string()), "{want} not in {env:?}");
    }
    assert_eq!(cfg["config"]["Labels"]["g"], "hello ");
    assert_eq!(cfg["config"]["Labels"]["c"], "1-unset");
    assert_eq!(cfg["config"]["WorkingDir"], "/w-1-unset");
    assert_eq!(f.file(&m, "/run-env"), "1-unset|hello \n");
}

/// Item 2: `--chown=UID` gives gid = uid; a user name takes its passwd group.
fn chown_numeric_user_gets_its_own_gid(f: &Fixture) {
    let m = f.build_ok(
        "chown-numeric",
        "FROM busybox:fixture
RUN echo 'svc:x:1001:50::/:/bin/sh' >> /etc/passwd
COPY --chown=1001 f.txt /by-uid
COPY --chown=svc f.txt /by-name
COPY --chown=1001:7 f.txt /by-pair
RUN stat -c '%n %u:%g' /by-uid /by-name /by-pair > /owners
",
        &[("f.txt", "x")],
    );
    assert_eq!(
        f.file(&m, "/owners"),
        "/by-uid 1001:1001\n/by-name 1001:50\n/by-pair 1001:7\n"
    );
}

/// Item 3: BuildKit's empty image has the default PATH in its Env.
fn scratch_config_has_the_default_path(f: &Fixture) {
    let m = f.build_ok(
        "scratch-path",
        "FROM scratch\nCOPY f.txt /f\n",
        &[("f.txt", "x")],
    );
    let cfg = f.config(&m);
    assert_eq!(
        env_of(&cfg),
        vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    );
    // A later ENV adds to it, as on any base.
    let m = f.build_ok("scratch-path-env", "FROM scratch\nENV A=b\n", &[]);
    assert_eq!(env_of(&f.config(&m)).len(), 2);
}

/// Item 4: `--chmod` takes variables and symbolic modes (chmod(1) rules;
/// X only for dirs and files someone may already execute).
fn chmod_expands_and_takes_symbolic_modes(f: &Fixture) {
    let ctx = f.context(
        "chmod-symbolic",
        "FROM busybox:fixture
ARG MODE=640
COPY --chmod=${MODE} plain.txt /octal
COPY --chmod=u+x plain.txt /ux
COPY --chmod=go-w wide.txt /gow
COPY --chmod=a+rX plain.txt tool.sh /arx/
COPY --chmod=a+rX dir /arxdir/
COPY --chmod=u=rwx,g=rx,o= plain.txt /eq
RUN stat -c '%n %a' /octal /ux /gow /arx/plain.txt /arx/tool.sh /arxdir/sub /arxdir/sub/f /eq > /modes
",
        &[
            ("plain.txt", "p"),
            ("wide.txt", "w"),
            ("tool.sh", "#!/bin/sh\n"),
            ("dir/sub/f", "f"),
        ],
    );
    let set = |p: &str, m: u32| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(ctx.join(p), std::fs::Permissions::from_mode(m)).unwrap();
    };
    set("plain.txt", 0o600);
    set("wide.txt", 0o666);
    set("tool.sh", 0o700);
    set("dir/sub", 0o700);
    set("dir/sub/f", 0o600);
    let result = f.builder().build(&f.request(&ctx), &mut |_| {}).unwrap();
    let modes = f.file(&result.manifest.to_string(), "/modes");
    assert_eq!(
        modes,
        "/octal 640\n/ux 700\n/gow 644\n/arx/plain.txt 644\n/arx/tool.sh 755\n/arxdir/sub 755\n/arxdir/sub/f 644\n/eq 750\n"
    );
    let bad = f.context(
        "chmod-bad",
        "FROM busybox:fixture\nCOPY --chmod=u+q plain.txt /x\n",
        &[("plain.txt", "p")],
    );
    let err = f
        .builder()
        .build(&f.request(&bad), &mut |_| {})
        .unwrap_err();
    assert!(err.is_bad_input(), "{err}");
    assert!(err.to_string().contains("--chmod=u+q"), "{err}");
}

/// Item 8: `RUN <<  EOF` (blanks after the operator) runs the heredoc as
/// its script, as `RUN <<EOF` does (dockerfile 1.16+).
fn heredoc_with_blanks_after_the_operator(f: &Fixture) {
    let m = f.build_ok(
        "heredoc-spaced",
        "FROM busybox:fixture\nRUN <<  EOF\necho spaced > /spaced\nEOF\nRUN <<-  'EOT'\n\techo \"$0\" > /tabbed\n\tEOT\nCOPY <<  NOTE /note\nhello\nNOTE\n",
        &[],
    );
    assert_eq!(f.file(&m, "/spaced"), "spaced\n");
    assert_eq!(f.file(&m, "/tabbed"), "/bin/sh\n");
    assert_eq!(f.file(&m, "/note"), "hello\n");
}

/// Item 9: a quoting error fails only a build that reaches its stage.
fn quoting_errors_only_fail_stages_built(f: &Fixture) {
    let dockerfile = "FROM busybox:fixture AS broken
WORKDIR \"/unterminated
FROM busybox:fixture AS good
RUN echo fine > /ok
";
    let ctx = f.context("quoting", dockerfile, &[]);
    let mut req = f.request(&ctx);
    req.target = Some("good".into());
    let result = f.builder().build(&req, &mut |_| {}).unwrap();
    assert_eq!(f.file(&result.manifest.to_string(), "/ok"), "fine\n");
    req.target = Some("broken".into());
    let err = f.builder().build(&req, &mut |_| {}).unwrap_err();
    assert!(err.is_bad_input(), "{err}");
    assert!(
        err.to_string().contains(
            "Dockerfile:2:9: unexpected end of statement while looking for matching double-quote"
        ),
        "{err}"
    );
}

/// Item 11: the platform ARGs and the scratch config are this machine's
/// platform, or the build's `--platform` (TARGET* only; BUILD* stay).
fn platform_args_follow_the_host_and_the_target(f: &Fixture) {
    let host = Platform::host();
    let dockerfile = "FROM scratch
ARG TARGETPLATFORM TARGETARCH BUILDPLATFORM BUILDARCH
LABEL t=$TARGETPLATFORM ta=$TARGETARCH b=$BUILDPLATFORM ba=$BUILDARCH
";
    let m = f.build_ok("platform-host", dockerfile, &[]);
    let cfg = f.config(&m);
    assert_eq!(cfg["architecture"], host.architecture.as_str());
    assert_eq!(cfg["os"], host.os.as_str());
    assert_eq!(cfg["config"]["Labels"]["t"], host.to_string().as_str());
    assert_eq!(cfg["config"]["Labels"]["ta"], host.architecture.as_str());
    assert_eq!(cfg["config"]["Labels"]["b"], host.to_string().as_str());

    let ctx = f.tmp.path().join("platform-host");
    let target: Platform = "linux/riscv64".parse().unwrap();
    let result = f
        .builder()
        .with_platform(target.clone())
        .build(&f.request(&ctx), &mut |_| {})
        .unwrap();
    let cfg = f.config(&result.manifest.to_string());
    assert_eq!(cfg["architecture"], "riscv64");
    assert_eq!(cfg["config"]["Labels"]["t"], "linux/riscv64");
    assert_eq!(cfg["config"]["Labels"]["ta"], "riscv64");
    assert_eq!(cfg["config"]["Labels"]["b"], host.to_string().as_str());
    assert_eq!(cfg["config"]["Labels"]["ba"], host.architecture.as_str());
}

cairn_testsupport::suite_main![Fixture;
    env_scope_keeps_expanded_values,
    chown_numeric_user_gets_its_own_gid,
    scratch_config_has_the_default_path,
    chmod_expands_and_takes_symbolic_modes,
    heredoc_with_blanks_after_the_operator,
    quoting_errors_only_fail_stages_built,
    platform_args_follow_the_host_and_the_target,
];
