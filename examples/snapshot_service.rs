//! A small HTTP snapshot service built only on Cairn's public API: what a
//! platform service does with the library, in one file.
//!
//! ```text
//! cargo run --release --example snapshot_service -- --store /tmp/svc --listen 127.0.0.1:8080
//! curl -XPOST localhost:8080/snapshots -d '{"org":"acme","name":"app:1","dockerfile":"FROM busybox\n"}' -H 'content-type: application/json'
//! curl -XPOST localhost:8080/snapshots/acme/app:1/sandboxes
//! curl -XPOST localhost:8080/sandboxes/ID/exec -d '{"argv":["uname","-a"]}' -H 'content-type: application/json'
//! ```
//!
//! Endpoints: `POST /snapshots`, `GET /snapshots?org=O`, `GET|DELETE
//! /snapshots/{org}/{key}`, `POST /snapshots/{org}/{key}/sandboxes`, `POST
//! /sandboxes/{id}/exec`, `PUT|GET /sandboxes/{id}/files?path=P`, `DELETE
//! /sandboxes/{id}`, `POST /builds`, `GET /images`, `POST /gc`. A client
//! that disconnects cancels its build or exec: axum drops the handler's
//! future, and a dropped Cairn future kills what it started.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use cairn::{AsyncCairn, ErrorKind};
use serde::Deserialize;
use serde_json::{json, Value};

/// A library error as an HTTP answer: the kind picks the status.
struct ApiError(cairn::Error);

impl From<cairn::Error> for ApiError {
    fn from(e: cairn::Error) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self.0.kind() {
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::Invalid => StatusCode::BAD_REQUEST,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let position = self
            .0
            .position()
            .map(|p| json!({"file": p.file, "line": p.line}));
        let body = json!({"error": self.0.to_string(), "position": position});
        (status, Json(body)).into_response()
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

fn to_json(value: impl serde::Serialize) -> ApiResult {
    serde_json::to_value(value)
        .map(Json)
        .map_err(|e| ApiError(cairn::Error::new(ErrorKind::Internal, e.to_string())))
}

#[derive(Deserialize)]
struct CreateSnapshot {
    org: String,
    name: String,
    dockerfile: String,
}

async fn create_snapshot(
    State(cairn): State<AsyncCairn>,
    Json(body): Json<CreateSnapshot>,
) -> ApiResult {
    // The Dockerfile's COPY sources would come from an uploaded context;
    // this example builds with an empty one.
    let context = tempfile::tempdir()
        .map_err(|e| ApiError(cairn::Error::new(ErrorKind::Internal, e.to_string())))?;
    let req = cairn::SnapshotRequest::dockerfile(&body.name, &body.dockerfile, context.path());
    let snap = cairn.create_snapshot(&body.org, req, |_| {}).await?;
    to_json(snap)
}

#[derive(Deserialize)]
struct OrgQuery {
    org: String,
}

async fn list_snapshots(State(cairn): State<AsyncCairn>, Query(q): Query<OrgQuery>) -> ApiResult {
    let page = cairn
        .snapshots(cairn::snapshot::repo::ListQuery::new(&q.org))
        .await?;
    to_json(page.items)
}

async fn get_snapshot(
    State(cairn): State<AsyncCairn>,
    Path((org, key)): Path<(String, String)>,
) -> ApiResult {
    to_json(cairn.snapshot(&org, &key).await?)
}

async fn delete_snapshot(
    State(cairn): State<AsyncCairn>,
    Path((org, key)): Path<(String, String)>,
) -> ApiResult {
    to_json(cairn.delete_snapshot(&org, &key).await?)
}

async fn start_sandbox(
    State(cairn): State<AsyncCairn>,
    Path((org, key)): Path<(String, String)>,
) -> ApiResult {
    let sandbox = cairn
        .start_sandbox(&org, &key, cairn::SandboxOptions::default())
        .await?;
    Ok(Json(json!({"id": sandbox.id, "layers": sandbox.layers})))
}

#[derive(Deserialize)]
struct Exec {
    argv: Vec<String>,
}

async fn exec(
    State(cairn): State<AsyncCairn>,
    Path(id): Path<String>,
    Json(body): Json<Exec>,
) -> ApiResult {
    let out = cairn
        .exec_output(&id, cairn::ExecRequest::new(body.argv))
        .await?;
    Ok(Json(json!({
        "exit_code": out.exit_code,
        "stdout": String::from_utf8_lossy(&out.stdout),
        "stderr": String::from_utf8_lossy(&out.stderr),
    })))
}

#[derive(Deserialize)]
struct FileQuery {
    path: String,
}

async fn put_file(
    State(cairn): State<AsyncCairn>,
    Path(id): Path<String>,
    Query(q): Query<FileQuery>,
    body: axum::body::Bytes,
) -> ApiResult {
    cairn.write_file(&id, &q.path, body.to_vec(), 0o644).await?;
    Ok(Json(json!({"written": body.len()})))
}

async fn get_file(
    State(cairn): State<AsyncCairn>,
    Path(id): Path<String>,
    Query(q): Query<FileQuery>,
) -> Result<Vec<u8>, ApiError> {
    Ok(cairn.read_file(&id, &q.path).await?)
}

async fn remove_sandbox(State(cairn): State<AsyncCairn>, Path(id): Path<String>) -> ApiResult {
    cairn.remove_sandbox(&id).await?;
    Ok(Json(json!({"removed": id})))
}

#[derive(Deserialize)]
struct Build {
    dockerfile: String,
    tag: String,
}

async fn build(State(cairn): State<AsyncCairn>, Json(body): Json<Build>) -> ApiResult {
    let req = cairn::BuildRequest::text(body.dockerfile).tag(body.tag);
    let built = cairn.build(req).await?;
    Ok(Json(json!({"manifest": built.manifest.to_string()})))
}

async fn images(State(cairn): State<AsyncCairn>) -> ApiResult {
    let cairn = cairn.blocking().clone();
    let images = tokio::task::spawn_blocking(move || cairn.images())
        .await
        .map_err(|e| ApiError(cairn::Error::new(ErrorKind::Internal, e.to_string())))??;
    to_json(images.into_iter().map(|(name, _)| name).collect::<Vec<_>>())
}

#[derive(Deserialize)]
struct Gc {
    /// Bytes of build cache to keep (None: all of it).
    cache_budget: Option<u64>,
}

async fn gc(State(cairn): State<AsyncCairn>, Json(body): Json<Gc>) -> ApiResult {
    let report = cairn.gc(body.cache_budget).await?;
    Ok(Json(json!({
        "blobs_removed": report.blobs_removed,
        "layer_dirs_removed": report.layer_dirs_removed,
    })))
}

/// The service's routes over one handle.
fn app(cairn: AsyncCairn) -> Router {
    Router::new()
        .route("/snapshots", post(create_snapshot).get(list_snapshots))
        .route(
            "/snapshots/{org}/{key}",
            get(get_snapshot).delete(delete_snapshot),
        )
        .route("/snapshots/{org}/{key}/sandboxes", post(start_sandbox))
        .route("/sandboxes/{id}", delete(remove_sandbox))
        .route("/sandboxes/{id}/exec", post(exec))
        .route("/sandboxes/{id}/files", get(get_file).put(put_file))
        .route("/builds", post(build))
        .route("/images", get(images))
        .route("/gc", post(gc))
        .with_state(cairn)
}

/// `--store DIR` and `--listen ADDR` (default: Cairn's store, 127.0.0.1:8080).
fn args() -> (cairn::CairnOptions, String) {
    let mut opts = cairn::CairnOptions::default();
    let mut listen = "127.0.0.1:8080".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--store", Some(dir)) => opts = cairn::CairnOptions::new(dir),
            ("--listen", Some(addr)) => listen = addr,
            _ => {
                eprintln!("usage: snapshot_service [--store DIR] [--listen ADDR]");
                std::process::exit(2);
            }
        }
    }
    (opts, listen)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // First, before the runtime starts any thread: sandboxes re-execute
    // this binary, and this is where that copy does its work.
    cairn::init();
    let (opts, listen) = args();
    let cairn = cairn::Cairn::open(opts)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&listen).await?;
        println!("listening on http://{}", listener.local_addr()?);
        axum::serve(listener, app(cairn.asynchronous())).await?;
        Ok(())
    })
}
