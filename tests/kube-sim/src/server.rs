//! The HTTP(S) front end: connection handling, routing of Kubernetes API paths to the
//! store, content negotiation, authentication and fault injection.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::discovery;
use crate::faults::Faults;
use crate::kinds::{self, ResourceKind};
use crate::kubelet::Kubelet;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::status::StatusError;
use crate::store::{Deleted, Store};
use crate::watch::{self, WatchContext, WatchRequest};

/// Response body type: full buffers or streamed watch lines.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// State one cluster's connections share.
pub struct Shared {
    /// Objects.
    pub store: Arc<Store>,
    /// Fault switches.
    pub faults: Arc<Faults>,
    /// Simulated kubelet usage.
    pub kubelet: Arc<Kubelet>,
    /// Required bearer token, if any.
    pub bearer_token: Option<String>,
    /// BOOKMARK period.
    pub bookmark_interval: Duration,
    /// Pause before the namespace controller empties a terminating namespace.
    pub namespace_finalize_delay: Duration,
    /// `host:port` the server listens on.
    pub addr: String,
}

/// Error returned to hyper to tear the connection down (simulated outage).
#[derive(Debug)]
pub struct Unreachable;

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("simulated outage")
    }
}

impl std::error::Error for Unreachable {}

/// Accepts connections until `cancel` fires.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    cancel: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            _ = cancel.cancelled() => return,
            acc = listener.accept() => match acc {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        if shared.faults.is_unreachable() {
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let cancel = cancel.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                Some(acceptor) => {
                    if let Ok(s) = acceptor.accept(stream).await {
                        serve_conn(s, shared, cancel).await;
                    }
                }
                None => serve_conn(stream, shared, cancel).await,
            }
        });
    }
}

async fn serve_conn<I>(io: I, shared: Arc<Shared>, cancel: CancellationToken)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| handle(shared.clone(), req));
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    tokio::select! {
        _ = conn => {}
        _ = cancel.cancelled() => {}
    }
}

fn full(code: u16, content_type: &str, body: Vec<u8>) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)).boxed_unsync())
        .expect("static response parts are valid")
}

fn json_response(code: u16, v: &Value) -> Response<Body> {
    full(
        code,
        "application/json",
        serde_json::to_vec(v).expect("values serialize"),
    )
}

fn error_response(e: &StatusError) -> Response<Body> {
    json_response(e.code, &e.to_status())
}

/// Decodes a query string (`a=b&c=d`, percent- and `+`-encoded).
fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    let decode = |s: &str| {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz");
                    match u8::from_str_radix(hex, 16) {
                        Ok(b) => {
                            out.push(b);
                            i += 2;
                        }
                        Err(_) => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    q.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// A resolved resource URL.
struct Target {
    kind: &'static ResourceKind,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

enum Route {
    Doc(Value),
    Resource(Target),
    /// The Summary through the apiserver's node proxy (authorized as `nodes/proxy`).
    NodeStats(String),
    /// The Summary straight from a node's kubelet (authorized as `nodes/stats`).
    KubeletStats(String),
}

/// Whether a path is served by a simulated kubelet (`/kubelet/{node}/...`), whose errors
/// are plain text as a real kubelet's, not `Status` objects.
fn is_kubelet_path(path: &str) -> bool {
    path.starts_with("/kubelet/")
}

fn route(path: &str, addr: &str) -> Result<Route, StatusError> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let none = || StatusError::no_route(path);
    let (group, version, rest) = match parts.as_slice() {
        ["version"] => return Ok(Route::Doc(discovery::version())),
        ["healthz" | "livez" | "readyz"] => return Ok(Route::Doc(json!("ok"))),
        ["api"] => return Ok(Route::Doc(discovery::core_versions(addr))),
        ["apis"] => return Ok(Route::Doc(discovery::groups())),
        ["openapi", "v3"] => return Ok(Route::Doc(discovery::openapi_v3_root())),
        ["openapi", "v3", "api", v] => {
            return discovery::openapi_v3_gv("", v)
                .map(Route::Doc)
                .ok_or_else(none);
        }
        ["openapi", "v3", "apis", g, v] => {
            return discovery::openapi_v3_gv(g, v)
                .map(Route::Doc)
                .ok_or_else(none);
        }
        ["api", "v1"] => {
            return discovery::resources("", "v1")
                .map(Route::Doc)
                .ok_or_else(none);
        }
        ["apis", g] => return discovery::group(g).map(Route::Doc).ok_or_else(none),
        ["apis", g, v] => return discovery::resources(g, v).map(Route::Doc).ok_or_else(none),
        ["api", "v1", "nodes", node, "proxy", "stats", "summary"] => {
            return Ok(Route::NodeStats(node.to_string()));
        }
        ["kubelet", node, "stats", "summary"] => {
            return Ok(Route::KubeletStats(node.to_string()));
        }
        ["api", "v1", rest @ ..] => ("", "v1", rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(none()),
    };
    let find = |r: &str| kinds::find(group, version, r).ok_or_else(none);
    let t = |kind, ns: Option<&str>, name: Option<&str>, sub: Option<&str>| {
        Route::Resource(Target {
            kind,
            namespace: ns.map(String::from),
            name: name.map(String::from),
            subresource: sub.map(String::from),
        })
    };
    Ok(match rest {
        [r] => t(find(r)?, None, None, None),
        ["namespaces", ns, sub @ ("status" | "finalize")] if group.is_empty() => {
            t(find("namespaces")?, None, Some(ns), Some(sub))
        }
        ["namespaces", ns, r] => {
            let k = find(r)?;
            if !k.namespaced {
                return Err(none());
            }
            t(k, Some(ns), None, None)
        }
        ["namespaces", ns, r, name] => t(find(r)?, Some(ns), Some(name), None),
        ["namespaces", ns, r, name, "status"] => t(find(r)?, Some(ns), Some(name), Some("status")),
        [r, name] => {
            let k = find(r)?;
            if k.namespaced {
                return Err(none());
            }
            t(k, None, Some(name), None)
        }
        [r, name, "status"] => t(find(r)?, None, Some(name), Some("status")),
        _ => return Err(none()),
    })
}

/// Entry point for every request.
pub async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Unreachable> {
    if shared.faults.is_unreachable() {
        return Err(Unreachable);
    }
    let delay = shared.faults.delay();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(token) = &shared.bearer_token {
        let ok = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .is_some_and(|t| t == token);
        if !ok {
            if is_kubelet_path(req.uri().path()) {
                return Ok(full(
                    401,
                    "text/plain; charset=utf-8",
                    b"Unauthorized".to_vec(),
                ));
            }
            return Ok(error_response(&StatusError::unauthorized()));
        }
    }
    if is_kubelet_path(req.uri().path()) {
        return Ok(kubelet_request(&shared, &req));
    }
    let result = handle_inner(&shared, req).await;
    Ok(result.unwrap_or_else(|e| error_response(&e)))
}

fn verb_of(method: &Method, t: &Target, watch: bool) -> &'static str {
    match (method.as_str(), t.name.is_some()) {
        ("GET", true) => "get",
        ("GET", false) if watch => "watch",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "unknown",
    }
}

fn forbidden(kind: &ResourceKind, verb: &str, t: &Target) -> StatusError {
    let scope = match &t.namespace {
        Some(ns) => format!(" in the namespace \"{ns}\""),
        None => " at the cluster scope".to_string(),
    };
    StatusError::forbidden(
        &kind.qualified_resource(),
        t.name.as_deref().unwrap_or(""),
        &format!(
            "User \"system:serviceaccount:kube-sim:client\" cannot {verb} resource \"{}\" in API group \"{}\"{scope}",
            kind.resource, kind.group
        ),
    )
}

async fn handle_inner(
    shared: &Shared,
    req: Request<Incoming>,
) -> Result<Response<Body>, StatusError> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let query = parse_query(parts.uri.query());
    let accept = parts
        .headers
        .get(header::ACCEPT)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();
    let as_table = accept.contains("as=Table");
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let user_agent = parts
        .headers
        .get(header::USER_AGENT)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();
    tracing::debug!(method = %parts.method, %path, "request");

    let target = match route(&path, &shared.addr)? {
        Route::Doc(doc) => {
            if parts.method != Method::GET {
                return Err(StatusError::method_not_allowed(parts.method.as_str()));
            }
            return Ok(json_response(200, &doc));
        }
        Route::NodeStats(node) => {
            if parts.method != Method::GET {
                return Err(StatusError::method_not_allowed(parts.method.as_str()));
            }
            check_faults(
                shared,
                "get",
                &Target {
                    kind: kinds::nodes(),
                    namespace: None,
                    name: Some(node.clone()),
                    subresource: Some("proxy".into()),
                },
                "nodes/proxy",
            )?;
            shared.store.get(kinds::nodes(), "", &node)?;
            return Ok(json_response(200, &node_summary(shared, &node)));
        }
        // Answered by `kubelet_request` before routing.
        Route::KubeletStats(_) => return Err(StatusError::no_route(&path)),
        Route::Resource(t) => t,
    };
    let kind = target.kind;
    let watch = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
    let verb = verb_of(&parts.method, &target, watch);
    let resource_name = match &target.subresource {
        Some(s) if kind.resource != "namespaces" || s != "finalize" => {
            format!("{}/{s}", kind.resource)
        }
        _ => kind.resource.to_string(),
    };
    check_faults(shared, verb, &target, &resource_name)?;

    let body = body
        .collect()
        .await
        .map_err(|e| StatusError::bad_request(format!("reading body: {e}")))?
        .to_bytes();
    let ns = target.namespace.clone().unwrap_or_default();
    let store = &shared.store;
    let manager = || {
        query.get("fieldManager").cloned().unwrap_or_else(|| {
            let ua = user_agent.split('/').next().unwrap_or("");
            if ua.is_empty() {
                "unknown".into()
            } else {
                ua.to_string()
            }
        })
    };

    match (verb, &target.name) {
        ("get", Some(name)) => {
            let obj = store.get(kind, &ns, name)?;
            if as_table {
                let rv = obj
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                return Ok(json_response(
                    200,
                    &discovery::table(kind, &[&obj], rv, None, store.clock().now()),
                ));
            }
            Ok(json_response(200, &obj))
        }
        ("list", None) => {
            let labels =
                LabelSelector::parse(query.get("labelSelector").map(String::as_str).unwrap_or(""))?;
            let fields = FieldSelector::parse(
                query.get("fieldSelector").map(String::as_str).unwrap_or(""),
                kind,
            )?;
            let limit = query
                .get("limit")
                .and_then(|l| l.parse::<usize>().ok())
                .filter(|l| *l > 0);
            let cont = query
                .get("continue")
                .map(String::as_str)
                .filter(|c| !c.is_empty());
            let page = store.list(
                kind,
                target.namespace.as_deref(),
                &labels,
                &fields,
                limit,
                cont,
            )?;
            if as_table {
                let refs: Vec<&Value> = page.items.iter().map(|v| v.as_ref()).collect();
                return Ok(json_response(
                    200,
                    &discovery::table(
                        kind,
                        &refs,
                        &page.rv.to_string(),
                        page.continue_token.as_deref(),
                        store.clock().now(),
                    ),
                ));
            }
            Ok(full(200, "application/json", render_list(kind, &page)))
        }
        ("watch", None) => {
            let labels =
                LabelSelector::parse(query.get("labelSelector").map(String::as_str).unwrap_or(""))?;
            let fields = FieldSelector::parse(
                query.get("fieldSelector").map(String::as_str).unwrap_or(""),
                kind,
            )?;
            let from = watch::parse_from(query.get("resourceVersion").map(String::as_str))?;
            let timeout = query
                .get("timeoutSeconds")
                .and_then(|t| t.parse::<u64>().ok())
                .map(Duration::from_secs)
                .unwrap_or(Duration::from_secs(1800));
            let req = WatchRequest {
                kind,
                namespace: target.namespace.clone(),
                labels,
                fields,
                from,
                bookmarks: query
                    .get("allowWatchBookmarks")
                    .is_some_and(|v| v == "true"),
                initial_events_end: query.get("sendInitialEvents").is_some_and(|v| v == "true"),
                timeout,
                as_table,
                clock: store.clock().clone(),
            };
            let ctx = WatchContext {
                store: store.clone(),
                dropper: shared.faults.watch_dropper(),
                bookmark_interval: shared.bookmark_interval,
            };
            let mut rx = watch::start(ctx, req);
            let stream = futures::stream::poll_fn(move |cx| {
                rx.poll_recv(cx)
                    .map(|o| o.map(|b| Ok::<_, Infallible>(Frame::data(b))))
            });
            let resp = Response::builder()
                .status(200)
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::TRANSFER_ENCODING, "chunked")
                .body(StreamBody::new(stream).boxed_unsync())
                .expect("static response parts are valid");
            Ok(resp)
        }
        ("create", None) => {
            if kind.namespaced && target.namespace.is_none() {
                return Err(StatusError::method_not_allowed("POST"));
            }
            let obj = parse_body(&body, &content_type)?;
            let out = store.create(kind, &ns, obj, &manager())?;
            Ok(json_response(201, &out))
        }
        ("update", Some(name)) => {
            let obj = parse_body(&body, &content_type)?;
            let out = store.update(kind, &ns, name, obj, &manager())?;
            Ok(json_response(200, &out))
        }
        ("patch", Some(name)) => {
            let patch = parse_body(&body, &content_type)?;
            if content_type.starts_with("application/apply-patch") {
                let Some(mgr) = query.get("fieldManager").filter(|m| !m.is_empty()) else {
                    return Err(StatusError::invalid(
                        "PatchOptions.meta.k8s.io",
                        "",
                        "fieldManager",
                        "Required value: is required for apply patch",
                    ));
                };
                let force = query.get("force").is_some_and(|f| f == "true");
                let (out, created) = store.apply(kind, &ns, name, &patch, mgr, force)?;
                Ok(json_response(if created { 201 } else { 200 }, &out))
            } else if content_type.starts_with("application/merge-patch+json")
                || content_type.starts_with("application/strategic-merge-patch+json")
            {
                let out = store.merge_patch(kind, &ns, name, &patch, &manager())?;
                Ok(json_response(200, &out))
            } else {
                Err(StatusError::unsupported_media_type(&content_type))
            }
        }
        ("delete", Some(name)) => {
            // DeleteOptions may come as protobuf (kubectl); options we cannot decode are ignored.
            let opts = parse_body(&body, &content_type).unwrap_or_else(|_| json!({}));
            let precondition = opts
                .pointer("/preconditions/resourceVersion")
                .and_then(Value::as_str);
            match store.delete(kind, &ns, name, precondition)? {
                Deleted::Gone(v) => Ok(json_response(200, &v)),
                Deleted::NamespaceTerminating(v) => {
                    let store = store.clone();
                    let delay = shared.namespace_finalize_delay;
                    let name = name.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        store.finalize_namespace(&name);
                    });
                    Ok(json_response(200, &v))
                }
            }
        }
        ("deletecollection", None) => {
            let labels =
                LabelSelector::parse(query.get("labelSelector").map(String::as_str).unwrap_or(""))?;
            let fields = FieldSelector::parse(
                query.get("fieldSelector").map(String::as_str).unwrap_or(""),
                kind,
            )?;
            let page = store.list(
                kind,
                target.namespace.as_deref(),
                &labels,
                &fields,
                None,
                None,
            )?;
            for obj in &page.items {
                let ons = obj
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let oname = obj
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if let Ok(Deleted::NamespaceTerminating(_)) = store.delete(kind, ons, oname, None) {
                    let store = store.clone();
                    let oname = oname.to_string();
                    tokio::spawn(async move { store.finalize_namespace(&oname) });
                }
            }
            Ok(full(200, "application/json", render_list(kind, &page)))
        }
        _ => Err(StatusError::method_not_allowed(parts.method.as_str())),
    }
}

/// The Summary of `node`: its running pods only, as a kubelet has no cgroup stats for
/// pods that finished (they stay in the API) or have not started.
fn node_summary(shared: &Shared, node: &str) -> Value {
    let pods: Vec<Arc<Value>> = shared
        .store
        .all(kinds::pods())
        .into_iter()
        .filter(|p| {
            p.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node)
                && crate::pod_life::is_running(p)
        })
        .collect();
    shared.kubelet.summary(node, &pods)
}

/// A request to a simulated kubelet (`/kubelet/{node}/stats/summary`), after the bearer
/// token check. A real kubelet authorizes its API with a SubjectAccessReview of the
/// path's node subresource (`get nodes/stats` for `/stats/*`), so that is what
/// [`Faults::deny`] rules match; errors are plain text, as a kubelet writes them.
fn kubelet_request<B>(shared: &Shared, req: &Request<B>) -> Response<Body> {
    let text = |code: u16, msg: String| full(code, "text/plain; charset=utf-8", msg.into_bytes());
    let path = req.uri().path();
    let node = match route(path, &shared.addr) {
        Ok(Route::KubeletStats(node)) => node,
        _ => return text(404, "404 page not found\n".into()),
    };
    if req.method() != Method::GET {
        return text(405, "Method Not Allowed\n".into());
    }
    if shared.faults.is_denied("get", "nodes/stats") {
        return text(
            403,
            "Forbidden (user=system:serviceaccount:kube-sim:client, verb=get, resource=nodes, subresource=stats)\n"
                .into(),
        );
    }
    if shared.faults.should_fail("get") {
        return text(500, "injected fault: get nodes/stats\n".into());
    }
    // kube-sim serves every node's kubelet on one port: a node without a Node object
    // has no kubelet.
    if shared.store.get(kinds::nodes(), "", &node).is_err() {
        return text(404, format!("node {node:?} not found\n"));
    }
    json_response(200, &node_summary(shared, &node))
}

fn check_faults(
    shared: &Shared,
    verb: &str,
    t: &Target,
    resource: &str,
) -> Result<(), StatusError> {
    if shared.faults.is_denied(verb, resource) {
        return Err(forbidden(t.kind, verb, t));
    }
    if shared.faults.should_fail(verb) {
        return Err(StatusError::internal(format!(
            "injected fault: {verb} {resource}"
        )));
    }
    Ok(())
}

fn parse_body(body: &[u8], content_type: &str) -> Result<Value, StatusError> {
    // kubectl sends built-in kinds as protobuf (create, run, expose) and
    // does not retry as JSON: decode what we know, refuse the rest by name.
    if content_type.contains("protobuf") {
        return crate::protobuf::decode(body).map_err(|e| match e {
            crate::protobuf::DecodeError::Unsupported(m) => StatusError::unsupported_body(m),
            crate::protobuf::DecodeError::Malformed(m) => {
                StatusError::bad_request(format!("error decoding protobuf: {m}"))
            }
        });
    }
    if content_type.contains("cbor") {
        return Err(StatusError::unsupported_media_type(content_type));
    }
    let v: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(json_err) => {
            if content_type.contains("yaml") {
                serde_yaml::from_slice(body)
                    .map_err(|e| StatusError::bad_request(format!("error decoding YAML: {e}")))?
            } else {
                return Err(StatusError::bad_request(format!(
                    "error decoding JSON: {json_err}"
                )));
            }
        }
    };
    if !v.is_object() {
        return Err(StatusError::bad_request(
            "the request body must be an object",
        ));
    }
    Ok(v)
}

/// A list item as a real apiserver renders it: without `kind` and `apiVersion`, which only
/// the list itself carries (kubernetes/kubernetes#3030). GET and watch events keep them.
struct ListItem<'a>(&'a Value);

impl serde::Serialize for ListItem<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let Value::Object(m) = self.0 else {
            return self.0.serialize(s);
        };
        let fields = m
            .iter()
            .filter(|(k, _)| k.as_str() != "kind" && k.as_str() != "apiVersion");
        let mut map = s.serialize_map(None)?;
        for (k, v) in fields {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// Serializes a list without cloning its items (items lose `kind`/`apiVersion`).
fn render_list(kind: &ResourceKind, page: &crate::store::ListPage) -> Vec<u8> {
    let mut meta = json!({ "resourceVersion": page.rv.to_string() });
    if let Some(c) = &page.continue_token {
        meta["continue"] = json!(c);
        meta["remainingItemCount"] = json!(page.remaining);
    }
    let mut out = Vec::with_capacity(128 + page.items.len() * 512);
    out.extend_from_slice(
        format!(
            "{{\"kind\":\"{}List\",\"apiVersion\":\"{}\",\"metadata\":",
            kind.kind,
            kind.api_version()
        )
        .as_bytes(),
    );
    serde_json::to_writer(&mut out, &meta).expect("values serialize");
    out.extend_from_slice(b",\"items\":[");
    for (i, item) in page.items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, &ListItem(item.as_ref())).expect("values serialize");
    }
    out.extend_from_slice(b"]}");
    out
}
