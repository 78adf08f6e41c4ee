//! Watch streams: backlog replay from a resource version, live events, selector
//! enter/leave transitions, bookmarks, timeouts and fault-driven drops.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc, watch as tokio_watch};

use crate::clock::SimClock;
use crate::discovery;
use crate::kinds::ResourceKind;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::status::StatusError;
use crate::store::{Event, EventType, Store, kind_index};

/// What a watch request asked for.
pub struct WatchRequest {
    /// The kind watched.
    pub kind: &'static ResourceKind,
    /// Namespace filter (`None` for all namespaces).
    pub namespace: Option<String>,
    /// Label selector.
    pub labels: LabelSelector,
    /// Field selector.
    pub fields: FieldSelector,
    /// Start after this version; `None` sends the current state as ADDED first.
    pub from: Option<u64>,
    /// Whether BOOKMARK events were asked for.
    pub bookmarks: bool,
    /// `sendInitialEvents=true`: end the initial ADDED burst with a marked BOOKMARK.
    pub initial_events_end: bool,
    /// Server-side timeout.
    pub timeout: Duration,
    /// Render objects as kubectl `Table`s.
    pub as_table: bool,
    /// The cluster clock (the `Table` Age column counts to its time).
    pub clock: SimClock,
}

/// Everything a watch task needs from its cluster.
pub struct WatchContext {
    /// The object store.
    pub store: Arc<Store>,
    /// Changes whenever faults drop watches.
    pub dropper: tokio_watch::Receiver<u64>,
    /// Period of BOOKMARK events.
    pub bookmark_interval: Duration,
}

fn line(req: &WatchRequest, etype: &str, obj: &Value) -> Bytes {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(etype.as_bytes());
    out.extend_from_slice(b"\",\"object\":");
    let rendered;
    let obj = if req.as_table && etype != "ERROR" && etype != "BOOKMARK" {
        let rv = obj
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        rendered = discovery::table(req.kind, &[obj], rv, None, req.clock.now());
        &rendered
    } else {
        obj
    };
    serde_json::to_writer(&mut out, obj).expect("values serialize");
    out.extend_from_slice(b"}\n");
    Bytes::from(out)
}

fn bookmark(req: &WatchRequest, rv: u64, initial_end: bool) -> Bytes {
    let mut meta = json!({ "resourceVersion": rv.to_string() });
    if initial_end {
        meta["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
    }
    let obj =
        json!({ "kind": req.kind.kind, "apiVersion": req.kind.api_version(), "metadata": meta });
    line(req, "BOOKMARK", &obj)
}

/// Which event, if any, this watcher sees for a committed change.
fn translate(req: &WatchRequest, ev: &Event) -> Option<&'static str> {
    if ev.kind != kind_index(req.kind) {
        return None;
    }
    let matches = |o: &Value| {
        if let Some(ns) = &req.namespace
            && o.pointer("/metadata/namespace").and_then(Value::as_str) != Some(ns.as_str())
        {
            return false;
        }
        req.labels.matches(o.pointer("/metadata/labels")) && req.fields.matches(o)
    };
    let now = matches(&ev.object);
    match ev.etype {
        EventType::Added => now.then_some("ADDED"),
        EventType::Deleted => now.then_some("DELETED"),
        EventType::Modified => {
            let before = ev.old.as_deref().map(matches).unwrap_or(now);
            match (before, now) {
                (true, true) => Some("MODIFIED"),
                (false, true) => Some("ADDED"),
                (true, false) => Some("DELETED"),
                (false, false) => None,
            }
        }
    }
}

/// Starts a watch and returns the channel its lines arrive on.
pub fn start(ctx: WatchContext, req: WatchRequest) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    tokio::spawn(run(ctx, req, tx));
    rx
}

async fn run(mut ctx: WatchContext, req: WatchRequest, tx: mpsc::Sender<Bytes>) {
    let (backlog, mut last, mut live) = match ctx.store.watch_from(req.kind, req.from) {
        Ok(x) => x,
        Err(e) => {
            let _ = tx.send(line(&req, "ERROR", &e.to_status())).await;
            return;
        }
    };
    for ev in &backlog {
        if let Some(t) = translate(&req, ev)
            && tx.send(line(&req, t, &ev.object)).await.is_err()
        {
            return;
        }
    }
    if req.initial_events_end
        && req.from.is_none()
        && tx.send(bookmark(&req, last, true)).await.is_err()
    {
        return;
    }
    ctx.dropper.borrow_and_update();
    let deadline = tokio::time::sleep(req.timeout);
    tokio::pin!(deadline);
    let mut ticker = tokio::time::interval(ctx.bookmark_interval);
    ticker.tick().await;
    loop {
        tokio::select! {
            ev = live.recv() => match ev {
                Ok(ev) => {
                    if ev.rv <= last {
                        continue;
                    }
                    last = ev.rv;
                    if let Some(t) = translate(&req, &ev)
                        && tx.send(line(&req, t, &ev.object)).await.is_err()
                    {
                        return;
                    }
                }
                // A watcher too slow for the live channel is cut off; it re-watches from
                // its last version (or relists after 410), as with a real apiserver.
                Err(broadcast::error::RecvError::Lagged(_)) | Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = ticker.tick(), if req.bookmarks => {
                if tx.send(bookmark(&req, last, false)).await.is_err() {
                    return;
                }
            }
            _ = ctx.dropper.changed() => return,
            _ = &mut deadline => return,
            _ = tx.closed() => return,
        }
    }
}

/// Parses a `resourceVersion` query value for watch: empty or `0` mean "from now, with state".
pub fn parse_from(rv: Option<&str>) -> Result<Option<u64>, StatusError> {
    match rv {
        None | Some("") | Some("0") => Ok(None),
        Some(s) => s
            .parse::<u64>()
            .map(Some)
            .map_err(|_| StatusError::bad_request(format!("invalid resource version: {s}"))),
    }
}
