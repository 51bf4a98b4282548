//! Parse throughput on a large synthetic Dockerfile (~5 MB) that uses
//! every instruction kind, continuations, comments and heredocs.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::fmt::Write;

fn synthetic(target_bytes: usize) -> String {
    let mut out = String::from("# syntax=docker/dockerfile:1\nARG BASE=alpine:3.20\nARG VERSION\n");
    let mut stage = 0;
    while out.len() < target_bytes {
        let _ = write!(
            out,
            r#"FROM --platform=$BUILDPLATFORM ${{BASE}} AS stage{stage}
ARG TARGETARCH VERSION=1.{stage}
ENV APP_HOME=/app PATH=/app/bin:$PATH LEGACY_{stage}=1
ENV OLD value with spaces
LABEL org.opencontainers.image.title="stage {stage}" \
      org.opencontainers.image.version=$VERSION
WORKDIR /app
# a comment between instructions
RUN --mount=type=cache,target=/var/cache/apk \
    --network=none \
    apk add --no-cache curl git \
# a comment inside a continuation
    && echo "built stage {stage}" > /app/stage.txt
RUN ["sh", "-c", "echo exec form {stage}"]
RUN <<EOF
set -eux
echo heredoc {stage}
EOF
COPY --from=stage{stage} --chown=1000:1000 --chmod=755 --link src/ /app/src/
COPY <<-"CONF" /etc/app.conf
	key={stage}
	CONF
ADD --checksum=sha256:24454f830cdb571e2c4ad15481119c43b3cafd48dd869a9b2945d1036d1dc68d https://example.com/a.tgz /tmp/
EXPOSE 80 443/tcp
VOLUME ["/data"]
USER app:app
HEALTHCHECK --interval=30s --timeout=3s CMD curl -f http://localhost/ || exit 1
ONBUILD RUN echo triggered {stage}
STOPSIGNAL SIGTERM
SHELL ["/bin/sh", "-c"]
ENTRYPOINT ["/app/bin/run"]
CMD echo shell form {stage}

"#
        );
        stage += 1;
    }
    out
}

fn bench_parse(c: &mut Criterion) {
    let text = synthetic(5 * 1024 * 1024);
    // The input must parse, or the bench would measure the error path.
    let stages = cairn_dockerfile::parse(&text)
        .map(|d| d.stages.len())
        .unwrap_or(0);
    assert!(stages > 1000, "synthetic Dockerfile did not parse");
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.sample_size(10);
    group.bench_function("synthetic_5MB", |b| {
        b.iter(|| cairn_dockerfile::parse(std::hint::black_box(&text)))
    });
    // The same without the time to free the tree.
    group.bench_function("synthetic_5MB_no_drop", |b| {
        b.iter_with_large_drop(|| cairn_dockerfile::parse(std::hint::black_box(&text)))
    });
    group.bench_function("synthetic_5MB_to_json", |b| {
        b.iter(|| {
            cairn_dockerfile::parse(std::hint::black_box(&text))
                .map(|d| cairn_dockerfile::to_json(&d).len())
        })
    });
    group.finish();
}

criterion_group!(benches, bench_parse);
criterion_main!(benches);
