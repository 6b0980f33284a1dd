//! E2B's control plane: sandboxes (create, connect, list, get, kill,
//! timeout, pause/resume), fork, snapshots and the network, behind
//! `X-API-KEY`. Handlers translate E2B's JSON ([`wire`]) into engine calls.
//!
//! A `templateID` names a snapshot (started copy-on-write, in milliseconds)
//! or an image (booted cold); E2B's default template names (`base`,
//! `code-interpreter-v1`) fall back to the daemon's default image when no
//! snapshot of that name exists.

mod page;
mod wire;

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use zygote_engine::{
    BranchSpec, CreateSpec, DeleteScope, EngineError, ForkSpec, ListQuery, SandboxState,
    SandboxView, SpawnSpec,
};

use crate::error::ApiError;
use crate::App;
use page::{page, PageQuery};
use wire::*;

/// E2B's template names that mean "the default environment".
const DEFAULT_TEMPLATES: &[&str] = &["base", "code-interpreter-v1", "code-interpreter"];
/// Largest control-plane request body.
const MAX_BODY: usize = 1 << 20;

type Answer = Result<Response, ApiError>;

/// The control-plane router.
pub(crate) fn router(app: App) -> Router {
    Router::new()
        .route("/health", get(|| async { StatusCode::OK }))
        .route("/sandboxes", post(create).get(list_v1))
        .route("/v2/sandboxes", post(create).get(list_v2))
        .route("/sandboxes/{id}", get(detail).delete(kill))
        .route("/sandboxes/{id}/timeout", post(set_timeout))
        .route("/sandboxes/{id}/refreshes", post(refresh))
        .route("/sandboxes/{id}/pause", post(pause))
        .route("/sandboxes/{id}/resume", post(resume))
        .route("/sandboxes/{id}/connect", post(connect))
        .route("/v2/sandboxes/{id}/connect", post(connect))
        .route("/sandboxes/{id}/fork", post(fork))
        .route("/sandboxes/{id}/snapshots", post(snapshot))
        .route("/sandboxes/{id}/network", put(network))
        .route("/snapshots", get(snapshots))
        .route("/templates/{id}", delete(delete_template))
        .fallback(|req: Request| async move {
            ApiError::not_found(format!(
                "{} {} is not part of the E2B API zygote serves (see docs/e2b.md)",
                req.method(),
                req.uri().path()
            ))
        })
        .layer(axum::middleware::from_fn_with_state(app.clone(), api_key))
        .with_state(app)
}

/// Every control-plane call but `/health` carries a key of the key file.
async fn api_key(State(app): State<App>, req: Request, next: Next) -> Response {
    if req.uri().path() == "/health" {
        return next.run(req).await;
    }
    let h = req.headers();
    let given = h
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            h.get(axum::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
        });
    match given {
        Some(k) if app.keys.accepts(k.trim()) => next.run(req).await,
        Some(_) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "Invalid API key: pass one of the keys in the daemon's --e2b-api-keys file (E2B_API_KEY)",
        )
        .into_response(),
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing API key: set E2B_API_KEY (sent as X-API-KEY) to a key of the daemon's --e2b-api-keys file",
        )
        .into_response(),
    }
}

/// A JSON body (`{}` when empty), errors naming the field.
fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    if body.len() > MAX_BODY {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is over {MAX_BODY} bytes"),
        ));
    }
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        ApiError::bad_request(format!("invalid body at `{}`: {}", e.path(), e.inner()))
    })
}

fn json(status: StatusCode, v: impl serde::Serialize) -> Response {
    (status, Json(v)).into_response()
}

/// One page of a list, the next page's token in `X-Next-Token`.
fn paged(items: impl serde::Serialize, next: Option<String>) -> Response {
    let mut resp = json(StatusCode::OK, items);
    if let Some(n) = next.and_then(|n| HeaderValue::from_str(&n).ok()) {
        resp.headers_mut().insert("x-next-token", n);
    }
    resp
}

/// A sandbox E2B may see (Stopping and Dead ones are gone to it).
fn live(app: &App, id: &str) -> Result<SandboxView, ApiError> {
    let v = app.engine.sandbox(id)?;
    match state_name(v.state) {
        Some(_) => Ok(v),
        None => Err(ApiError::not_found(format!(
            "sandbox {id} is {} ({})",
            v.state.as_str(),
            v.reason.as_deref().unwrap_or("stopped")
        ))),
    }
}

async fn create(State(app): State<App>, body: Bytes) -> Answer {
    let b: NewSandbox = parse(&body)?;
    unsupported("mcp", b.mcp.as_ref().is_some_and(|v| !v.is_null()))?;
    unsupported("iam", b.iam.as_ref().is_some_and(|v| !v.is_null()))?;
    unsupported(
        "volumeMounts",
        b.volume_mounts.as_ref().is_some_and(|v| !v.is_empty()),
    )?;
    unsupported(
        "autoResume",
        b.auto_resume
            .as_ref()
            .is_some_and(|v| v.get("enabled").and_then(|e| e.as_bool()) == Some(true)),
    )?;
    let _ = (b.secure, b.auto_pause_memory);
    let lifetime = lifetime(b.timeout, b.auto_pause.unwrap_or(false))?;
    let network = network_request(&b)?;
    let env = b.env_vars.clone().unwrap_or_default();
    let metadata = b.metadata.clone().unwrap_or_default();
    let t = b.template_id.trim();
    let view = if app.engine.snapshot(t).is_ok() {
        let spec = SpawnSpec {
            snapshot: t.to_string(),
            count: Some(1),
            env,
            lifetime,
            metadata,
            network,
            ..Default::default()
        };
        let child = app.engine.spawn(spec).await?.into_iter().next();
        match child {
            Some(Ok(c)) => c.sandbox,
            Some(Err(e)) => return Err(e.into()),
            None => {
                return Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "no child started",
                ))
            }
        }
    } else {
        let image = if app.engine.images()?.iter().any(|i| i.name == t) {
            Some(t.to_string())
        } else if DEFAULT_TEMPLATES.contains(&t) {
            None
        } else {
            return Err(ApiError::not_found(format!(
                "template {t:?} not found: pass a snapshot tag (`zygote snapshot ls`) or an image name (`zygote image ls`)"
            )));
        };
        let spec = CreateSpec {
            image,
            env,
            lifetime,
            metadata,
            network,
            ..Default::default()
        };
        app.engine.create(spec).await?
    };
    Ok(json(StatusCode::CREATED, sandbox(&view, &app.keys)))
}

/// Root size in MiB of each image, by name.
fn disk_sizes(app: &App) -> std::collections::HashMap<String, u64> {
    app.engine
        .images()
        .unwrap_or_default()
        .into_iter()
        .map(|i| (i.name, i.rootfs_bytes >> 20))
        .collect()
}

fn listed_all(app: &App, views: Vec<SandboxView>) -> Vec<Listed> {
    let disks = disk_sizes(app);
    views
        .iter()
        .filter(|v| state_name(v.state).is_some())
        .map(|v| listed(v, disks.get(&v.image).copied().unwrap_or(0), None))
        .collect()
}

/// `?metadata=k%3Dv%26k2%3Dv2` as a map.
fn metadata_query(q: &PageQuery) -> ListQuery {
    let metadata = q
        .metadata
        .as_deref()
        .map(|m| {
            form_urlencoded::parse(m.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default();
    ListQuery {
        metadata,
        state: None,
    }
}

async fn list_v1(State(app): State<App>, Query(q): Query<PageQuery>) -> Answer {
    let views = app.engine.sandboxes_where(&metadata_query(&q));
    let running = views
        .into_iter()
        .filter(|v| matches!(v.state, SandboxState::Running | SandboxState::Booting))
        .collect();
    Ok(json(StatusCode::OK, listed_all(&app, running)))
}

async fn list_v2(State(app): State<App>, Query(q): Query<PageQuery>) -> Answer {
    let states = q.states()?;
    let (after, before) = q.started()?;
    let views = app.engine.sandboxes_where(&metadata_query(&q));
    let views = views
        .into_iter()
        .filter(|v| state_name(v.state).is_some_and(|s| states.contains(&s)))
        .filter(|v| (after..=before).contains(&(v.created_at_unix as i64)))
        .collect();
    let mut items = listed_all(&app, views);
    if q.order.as_deref() == Some("desc") {
        items.reverse();
    }
    let (items, next) = page(items, |l| l.sandbox_id.as_str(), &q)?;
    Ok(paged(items, next))
}

async fn detail(State(app): State<App>, Path(id): Path<String>) -> Answer {
    let v = live(&app, &id)?;
    let disk = disk_sizes(&app).get(&v.image).copied().unwrap_or(0);
    Ok(json(
        StatusCode::OK,
        listed(&v, disk, Some(app.keys.access_token(&id))),
    ))
}

async fn kill(State(app): State<App>, Path(id): Path<String>) -> Answer {
    live(&app, &id)?;
    app.engine.remove(&id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn set_timeout(State(app): State<App>, Path(id): Path<String>, body: Bytes) -> Answer {
    let b: TimeoutBody = parse(&body)?;
    let v = live(&app, &id)?;
    let on_pause = v.on_expiry == zygote_engine::Expiry::Pause;
    app.engine
        .set_timeout(&id, lifetime(Some(b.timeout), on_pause)?)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Keep a sandbox alive `duration` seconds more (never shortens it).
async fn refresh(State(app): State<App>, Path(id): Path<String>, body: Bytes) -> Answer {
    let b: RefreshBody = parse(&body)?;
    let v = live(&app, &id)?;
    let secs = b.duration.unwrap_or(DEFAULT_TIMEOUT_SECS);
    let now = crate::time::now_unix();
    let left = v.expires_at_unix.map(|e| e.saturating_sub(now));
    if left.is_some_and(|l| l < secs) {
        let on_pause = v.on_expiry == zygote_engine::Expiry::Pause;
        app.engine
            .set_timeout(&id, lifetime(Some(secs), on_pause)?)
            .await?;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn pause(State(app): State<App>, Path(id): Path<String>, body: Bytes) -> Answer {
    let b: PauseBody = parse(&body)?;
    unsupported(
        "memory: false",
        b.memory.as_ref().and_then(|m| m.as_bool()) == Some(false),
    )?;
    let _ = b.require_healthy_guest;
    let v = live(&app, &id)?;
    if v.state == SandboxState::Paused {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("sandbox {id} is already paused"),
        ));
    }
    app.engine.pause(&id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Resume if paused, then apply the timeout; `created` says whether it was paused.
async fn wake(app: &App, id: &str, b: &ConnectBody) -> Result<(SandboxView, bool), ApiError> {
    let v = live(app, id)?;
    // zygote's pause always keeps memory: `memory` changes nothing.
    let _ = &b.memory;
    let paused = v.state == SandboxState::Paused;
    if paused {
        app.engine.resume(id).await?;
    }
    let on_pause = b
        .auto_pause
        .unwrap_or(v.on_expiry == zygote_engine::Expiry::Pause);
    let now = crate::time::now_unix();
    let left = v.expires_at_unix.map(|e| e.saturating_sub(now));
    let asked = b.timeout;
    // A connect only ever extends; a resume sets the timeout asked.
    let view = match asked {
        Some(t) if paused || left.is_none_or(|l| l < t) => {
            app.engine
                .set_timeout(id, lifetime(Some(t), on_pause)?)
                .await?
        }
        _ => app.engine.sandbox(id)?,
    };
    Ok((view, paused))
}

async fn connect(State(app): State<App>, Path(id): Path<String>, body: Bytes) -> Answer {
    let b: ConnectBody = parse(&body)?;
    let (v, resumed) = wake(&app, &id, &b).await?;
    let status = if resumed {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json(status, sandbox(&v, &app.keys)))
}

async fn resume(State(app): State<App>, Path(id): Path<String>, body: Bytes) -> Answer {
    let b: ConnectBody = parse(&body)?;
    if live(&app, &id)?.state != SandboxState::Paused {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("sandbox {id} is already running"),
        ));
    }
    let (v, _) = wake(&app, &id, &b).await?;
    Ok(json(StatusCode::CREATED, sandbox(&v, &app.keys)))
}

async fn fork(State(app): State<App>, Path(id): Path<String>, body: Bytes) -> Answer {
    let b: ForkBody = parse(&body)?;
    let count = b.count.unwrap_or(1);
    if count == 0 || count > MAX_FORK {
        return Err(ApiError::bad_request(format!(
            "count {count} is out of range: fork 1 to {MAX_FORK} sandboxes at a time"
        )));
    }
    let parent = live(&app, &id)?;
    let spec = ForkSpec {
        count: Some(count),
        lifetime: lifetime(b.timeout, false)?,
        metadata: parent.metadata.clone(),
        ..Default::default()
    };
    let forked = app.engine.fork(&id, spec).await?;
    let out: Vec<serde_json::Value> = forked
        .children
        .into_iter()
        .map(|c| match c {
            Ok(c) => serde_json::json!({"sandbox": sandbox(&c.sandbox, &app.keys)}),
            Err(e) => {
                let e = ApiError::from(e);
                serde_json::json!({"error": {"code": e.status.as_u16(), "message": e.message}})
            }
        })
        .collect();
    Ok(json(StatusCode::CREATED, out))
}

async fn snapshot(State(app): State<App>, Path(id): Path<String>, body: Bytes) -> Answer {
    let b: SnapshotBody = parse(&body)?;
    unsupported(
        "memory: false",
        b.memory.as_ref().and_then(|m| m.as_bool()) == Some(false),
    )?;
    live(&app, &id)?;
    let spec = BranchSpec {
        tag: b.name.filter(|n| !n.is_empty()),
        wait: true,
        ..Default::default()
    };
    let s = app.engine.branch(&id, spec).await?;
    Ok(json(
        StatusCode::CREATED,
        SnapshotInfo {
            names: vec![s.tag.clone()],
            snapshot_id: s.tag,
        },
    ))
}

async fn snapshots(State(app): State<App>, Query(q): Query<PageQuery>) -> Answer {
    let items: Vec<SnapshotInfo> = app
        .engine
        .snapshots()
        .into_iter()
        .filter(|s| {
            q.sandbox_id
                .as_ref()
                .is_none_or(|id| s.branched_from.as_ref() == Some(id))
        })
        .filter(|s| q.name.as_ref().is_none_or(|n| &s.tag == n))
        .map(|s| SnapshotInfo {
            names: vec![s.tag.clone()],
            snapshot_id: s.tag,
        })
        .collect();
    let (items, next) = page(items, |s| s.snapshot_id.as_str(), &q)?;
    Ok(paged(items, next))
}

/// `Sandbox.delete_snapshot`: E2B deletes a snapshot as a template.
async fn delete_template(State(app): State<App>, Path(tag): Path<String>) -> Answer {
    match app
        .engine
        .delete_snapshot(&tag, DeleteScope::Snapshot)
        .await
    {
        Ok(_) => Ok(StatusCode::NO_CONTENT.into_response()),
        Err(e @ EngineError::SnapshotNotFound { .. }) => Err(ApiError::not_found(e.to_string())),
        Err(e) => Err(e.into()),
    }
}

async fn network(State(app): State<App>, Path(id): Path<String>, body: Bytes) -> Answer {
    let n: NetworkConfig = parse(&body)?;
    live(&app, &id)?;
    let p = policy(None, &n)?;
    app.engine.set_network(&id, p).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
