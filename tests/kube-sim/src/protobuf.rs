//! Request bodies in Kubernetes' protobuf encoding, as `kubectl create`,
//! `run` and `expose` send them for built-in types, decoded into the JSON the
//! rest of kube-sim works on.
//!
//! The envelope is `k8s\0` followed by a `runtime.Unknown` message whose
//! `typeMeta` names the kind and whose `raw` holds the object. Only the kinds
//! and fields below are known (field numbers from k8s.io/api's
//! `generated.proto`); anything else is refused with 415 naming the field,
//! never dropped: a simulator that silently lost a field would lie. An empty
//! unknown message or string is the encoding of a Go zero value and carries
//! nothing, so it is skipped.
//!
//! Go's protobuf marshalling writes non-pointer fields even when they hold
//! their zero value; the JSON encoding omits those (`omitempty`). Such zeros
//! are dropped here too, except for fields that are pointers in Go
//! (`keep_zero`), where `0` or `false` means something (`replicas: 0`).

use base64::Engine;
use serde_json::{Map, Value};

const MAGIC: &[u8] = b"k8s\0";

#[derive(Clone, Copy)]
enum Kind {
    Str,
    Int,
    Bool,
    Msg(&'static Message),
    MapStr,
    MapBytes,
    MapQuantity,
    Time,
    IntOrString,
}

struct Field {
    number: u64,
    name: &'static str,
    kind: Kind,
    repeated: bool,
    keep_zero: bool,
}

struct Message {
    name: &'static str,
    fields: &'static [Field],
}

const fn f(number: u64, name: &'static str, kind: Kind) -> Field {
    Field {
        number,
        name,
        kind,
        repeated: false,
        keep_zero: false,
    }
}

/// A repeated field.
const fn r(number: u64, name: &'static str, kind: Kind) -> Field {
    Field {
        repeated: true,
        ..f(number, name, kind)
    }
}

/// A field that is a pointer in Go: its zero value is kept.
const fn p(number: u64, name: &'static str, kind: Kind) -> Field {
    Field {
        keep_zero: true,
        ..f(number, name, kind)
    }
}

use Kind::*;

static OBJECT_META: Message = Message {
    name: "ObjectMeta",
    fields: &[
        f(1, "name", Str),
        f(2, "generateName", Str),
        f(3, "namespace", Str),
        f(5, "uid", Str),
        f(6, "resourceVersion", Str),
        f(7, "generation", Int),
        f(8, "creationTimestamp", Time),
        f(11, "labels", MapStr),
        f(12, "annotations", MapStr),
        r(14, "finalizers", Str),
    ],
};

static LABEL_SELECTOR_REQUIREMENT: Message = Message {
    name: "LabelSelectorRequirement",
    fields: &[f(1, "key", Str), f(2, "operator", Str), r(3, "values", Str)],
};

static LABEL_SELECTOR: Message = Message {
    name: "LabelSelector",
    fields: &[
        f(1, "matchLabels", MapStr),
        r(2, "matchExpressions", Msg(&LABEL_SELECTOR_REQUIREMENT)),
    ],
};

static NAMESPACE_SPEC: Message = Message {
    name: "NamespaceSpec",
    fields: &[r(1, "finalizers", Str)],
};

static NAMESPACE: Message = Message {
    name: "Namespace",
    fields: &[
        f(1, "metadata", Msg(&OBJECT_META)),
        f(2, "spec", Msg(&NAMESPACE_SPEC)),
    ],
};

static CONFIG_MAP: Message = Message {
    name: "ConfigMap",
    fields: &[
        f(1, "metadata", Msg(&OBJECT_META)),
        f(2, "data", MapStr),
        f(3, "binaryData", MapBytes),
        p(4, "immutable", Bool),
    ],
};

static SECRET: Message = Message {
    name: "Secret",
    fields: &[
        f(1, "metadata", Msg(&OBJECT_META)),
        f(2, "data", MapBytes),
        f(3, "type", Str),
        f(4, "stringData", MapStr),
        p(5, "immutable", Bool),
    ],
};

static LOCAL_OBJECT_REFERENCE: Message = Message {
    name: "LocalObjectReference",
    fields: &[f(1, "name", Str)],
};

static SERVICE_ACCOUNT: Message = Message {
    name: "ServiceAccount",
    fields: &[
        f(1, "metadata", Msg(&OBJECT_META)),
        r(3, "imagePullSecrets", Msg(&LOCAL_OBJECT_REFERENCE)),
        p(4, "automountServiceAccountToken", Bool),
    ],
};

static CONTAINER_PORT: Message = Message {
    name: "ContainerPort",
    fields: &[
        f(1, "name", Str),
        f(2, "hostPort", Int),
        f(3, "containerPort", Int),
        f(4, "protocol", Str),
        f(5, "hostIP", Str),
    ],
};

static ENV_VAR: Message = Message {
    name: "EnvVar",
    fields: &[f(1, "name", Str), f(2, "value", Str)],
};

static RESOURCE_REQUIREMENTS: Message = Message {
    name: "ResourceRequirements",
    fields: &[f(1, "limits", MapQuantity), f(2, "requests", MapQuantity)],
};

static CONTAINER: Message = Message {
    name: "Container",
    fields: &[
        f(1, "name", Str),
        f(2, "image", Str),
        r(3, "command", Str),
        r(4, "args", Str),
        f(5, "workingDir", Str),
        r(6, "ports", Msg(&CONTAINER_PORT)),
        r(7, "env", Msg(&ENV_VAR)),
        f(8, "resources", Msg(&RESOURCE_REQUIREMENTS)),
        f(13, "terminationMessagePath", Str),
        f(14, "imagePullPolicy", Str),
        f(16, "stdin", Bool),
        f(17, "stdinOnce", Bool),
        f(18, "tty", Bool),
        f(20, "terminationMessagePolicy", Str),
    ],
};

static POD_SPEC: Message = Message {
    name: "PodSpec",
    fields: &[
        r(2, "containers", Msg(&CONTAINER)),
        f(3, "restartPolicy", Str),
        p(4, "terminationGracePeriodSeconds", Int),
        p(5, "activeDeadlineSeconds", Int),
        f(6, "dnsPolicy", Str),
        f(7, "nodeSelector", MapStr),
        f(8, "serviceAccountName", Str),
        f(10, "nodeName", Str),
        f(11, "hostNetwork", Bool),
        f(12, "hostPID", Bool),
        f(13, "hostIPC", Bool),
        r(15, "imagePullSecrets", Msg(&LOCAL_OBJECT_REFERENCE)),
        f(16, "hostname", Str),
        f(17, "subdomain", Str),
        f(19, "schedulerName", Str),
        r(20, "initContainers", Msg(&CONTAINER)),
        p(21, "automountServiceAccountToken", Bool),
        f(24, "priorityClassName", Str),
        p(30, "enableServiceLinks", Bool),
    ],
};

static POD: Message = Message {
    name: "Pod",
    fields: &[
        f(1, "metadata", Msg(&OBJECT_META)),
        f(2, "spec", Msg(&POD_SPEC)),
    ],
};

static POD_TEMPLATE_SPEC: Message = Message {
    name: "PodTemplateSpec",
    fields: &[
        f(1, "metadata", Msg(&OBJECT_META)),
        f(2, "spec", Msg(&POD_SPEC)),
    ],
};

static SERVICE_PORT: Message = Message {
    name: "ServicePort",
    fields: &[
        f(1, "name", Str),
        f(2, "protocol", Str),
        f(3, "port", Int),
        f(4, "targetPort", IntOrString),
        f(5, "nodePort", Int),
        p(6, "appProtocol", Str),
    ],
};

static SERVICE_SPEC: Message = Message {
    name: "ServiceSpec",
    fields: &[
        r(1, "ports", Msg(&SERVICE_PORT)),
        f(2, "selector", MapStr),
        f(3, "clusterIP", Str),
        f(4, "type", Str),
        r(5, "externalIPs", Str),
        f(7, "sessionAffinity", Str),
        f(8, "loadBalancerIP", Str),
        f(10, "externalName", Str),
        f(11, "externalTrafficPolicy", Str),
        r(18, "clusterIPs", Str),
        r(19, "ipFamilies", Str),
        p(17, "ipFamilyPolicy", Str),
        p(22, "internalTrafficPolicy", Str),
    ],
};

static SERVICE: Message = Message {
    name: "Service",
    fields: &[
        f(1, "metadata", Msg(&OBJECT_META)),
        f(2, "spec", Msg(&SERVICE_SPEC)),
    ],
};

static ROLLING_UPDATE_DEPLOYMENT: Message = Message {
    name: "RollingUpdateDeployment",
    fields: &[
        p(1, "maxUnavailable", IntOrString),
        p(2, "maxSurge", IntOrString),
    ],
};

static DEPLOYMENT_STRATEGY: Message = Message {
    name: "DeploymentStrategy",
    fields: &[
        f(1, "type", Str),
        f(2, "rollingUpdate", Msg(&ROLLING_UPDATE_DEPLOYMENT)),
    ],
};

static DEPLOYMENT_SPEC: Message = Message {
    name: "DeploymentSpec",
    fields: &[
        p(1, "replicas", Int),
        f(2, "selector", Msg(&LABEL_SELECTOR)),
        f(3, "template", Msg(&POD_TEMPLATE_SPEC)),
        f(4, "strategy", Msg(&DEPLOYMENT_STRATEGY)),
        f(5, "minReadySeconds", Int),
        p(6, "revisionHistoryLimit", Int),
        f(7, "paused", Bool),
        p(9, "progressDeadlineSeconds", Int),
    ],
};

static DEPLOYMENT: Message = Message {
    name: "Deployment",
    fields: &[
        f(1, "metadata", Msg(&OBJECT_META)),
        f(2, "spec", Msg(&DEPLOYMENT_SPEC)),
    ],
};

/// The kinds kube-sim decodes, by `apiVersion` and `kind`.
fn schema(api_version: &str, kind: &str) -> Option<&'static Message> {
    Some(match (api_version, kind) {
        ("v1", "Namespace") => &NAMESPACE,
        ("v1", "ConfigMap") => &CONFIG_MAP,
        ("v1", "Secret") => &SECRET,
        ("v1", "ServiceAccount") => &SERVICE_ACCOUNT,
        ("v1", "Pod") => &POD,
        ("v1", "Service") => &SERVICE,
        ("apps/v1", "Deployment") => &DEPLOYMENT,
        _ => return None,
    })
}

/// Why a body could not be decoded (answered as 415 UnsupportedMediaType or
/// 400 BadRequest by the caller).
#[derive(Debug, PartialEq)]
pub enum DecodeError {
    /// Valid protobuf kube-sim does not know how to turn into JSON.
    Unsupported(String),
    /// Not valid protobuf.
    Malformed(String),
}

/// Decodes a `k8s\0`-prefixed protobuf request body into its JSON form.
pub fn decode(body: &[u8]) -> Result<Value, DecodeError> {
    let raw = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| DecodeError::Malformed("protobuf body lacks the k8s\\0 prefix".into()))?;
    let mut api_version = String::new();
    let mut kind = String::new();
    let mut object = None;
    let mut reader = Reader::new(raw);
    while let Some((number, value)) = reader.field()? {
        match (number, value) {
            (1, Wire::Bytes(type_meta)) => {
                let mut r = Reader::new(type_meta);
                while let Some((n, v)) = r.field()? {
                    match (n, v) {
                        (1, Wire::Bytes(b)) => api_version = utf8(b)?,
                        (2, Wire::Bytes(b)) => kind = utf8(b)?,
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(b)) => object = Some(b),
            (3 | 4, Wire::Bytes(&[])) => {}
            (3, Wire::Bytes(_)) => {
                return Err(DecodeError::Unsupported(
                    "protobuf bodies with a contentEncoding are not supported".into(),
                ));
            }
            _ => {}
        }
    }
    let message = schema(&api_version, &kind).ok_or_else(|| {
        DecodeError::Unsupported(format!(
            "kube-sim decodes protobuf bodies only for v1 Namespace, ConfigMap, Secret, ServiceAccount, Pod, Service and apps/v1 Deployment, not {api_version} {kind}; send JSON (e.g. kubectl apply -f)"
        ))
    })?;
    let mut out = decode_message(message, object.unwrap_or_default())?;
    out.insert("apiVersion".into(), Value::String(api_version));
    out.insert("kind".into(), Value::String(kind));
    Ok(Value::Object(out))
}

fn utf8(b: &[u8]) -> Result<String, DecodeError> {
    String::from_utf8(b.to_vec())
        .map_err(|_| DecodeError::Malformed("a string is not UTF-8".into()))
}

fn decode_message(message: &Message, bytes: &[u8]) -> Result<Map<String, Value>, DecodeError> {
    let mut out = Map::new();
    let mut reader = Reader::new(bytes);
    while let Some((number, wire)) = reader.field()? {
        let Some(field) = message.fields.iter().find(|f| f.number == number) else {
            if carries_nothing(&wire) {
                continue;
            }
            return Err(DecodeError::Unsupported(format!(
                "kube-sim does not decode field {number} of {} from protobuf; send JSON (e.g. kubectl apply -f)",
                message.name
            )));
        };
        let value = decode_value(message, field, wire)?;
        match value {
            Decoded::Skip => {}
            Decoded::Value(v) if field.repeated => match out
                .entry(field.name)
                .or_insert_with(|| Value::Array(vec![]))
            {
                Value::Array(items) => items.push(v),
                _ => unreachable!("repeated fields are arrays"),
            },
            Decoded::Value(v) => {
                out.insert(field.name.into(), v);
            }
            Decoded::Entry(k, v) => {
                if let Value::Object(map) = out
                    .entry(field.name)
                    .or_insert_with(|| Value::Object(Map::new()))
                {
                    map.insert(k, v);
                }
            }
        }
    }
    Ok(out)
}

/// Whether an unknown field holds only zero values: Go writes non-pointer
/// fields (a `status` with an empty `phase`, say) even when nothing is set.
/// Bytes count as nothing if empty or, read as a message, all zeros.
fn carries_nothing(wire: &Wire) -> bool {
    match wire {
        Wire::Varint(v) => *v == 0,
        Wire::Fixed64 | Wire::Fixed32 => false,
        Wire::Bytes(b) => {
            let mut r = Reader::new(b);
            loop {
                match r.field() {
                    Ok(None) => return true,
                    Ok(Some((_, w))) if carries_nothing(&w) => {}
                    _ => return false,
                }
            }
        }
    }
}

enum Decoded {
    Skip,
    Value(Value),
    /// One entry of a map field.
    Entry(String, Value),
}

fn wrong_type(message: &Message, field: &Field) -> DecodeError {
    DecodeError::Malformed(format!(
        "{}.{} has the wrong wire type",
        message.name, field.name
    ))
}

fn decode_value(message: &Message, field: &Field, wire: Wire) -> Result<Decoded, DecodeError> {
    let zero_dropped = |v: Value, is_zero: bool| {
        if is_zero && !field.keep_zero && !field.repeated {
            Decoded::Skip
        } else {
            Decoded::Value(v)
        }
    };
    Ok(match (field.kind, wire) {
        (Str, Wire::Bytes(b)) => {
            let s = utf8(b)?;
            let empty = s.is_empty();
            zero_dropped(Value::String(s), empty)
        }
        (Int, Wire::Varint(v)) => {
            // int32 and int64 are both sign-extended to 64 bits on the wire.
            let n = v as i64;
            zero_dropped(Value::from(n), n == 0)
        }
        (Bool, Wire::Varint(v)) => zero_dropped(Value::Bool(v != 0), v == 0),
        (Msg(inner), Wire::Bytes(b)) => {
            let decoded = decode_message(inner, b)?;
            Decoded::Value(Value::Object(decoded))
        }
        (MapStr | MapBytes | MapQuantity, Wire::Bytes(b)) => {
            let (key, value) = map_entry(b)?;
            let value = match field.kind {
                MapStr => Value::String(utf8(value)?),
                MapBytes => Value::String(base64::engine::general_purpose::STANDARD.encode(value)),
                _ => quantity(value)?,
            };
            Decoded::Entry(key, value)
        }
        (Time, Wire::Bytes(b)) => match time(b)? {
            Some(t) => Decoded::Value(Value::String(t)),
            None => Decoded::Skip,
        },
        (IntOrString, Wire::Bytes(b)) => Decoded::Value(int_or_string(b)?),
        _ => return Err(wrong_type(message, field)),
    })
}

fn map_entry(b: &[u8]) -> Result<(String, &[u8]), DecodeError> {
    let mut key = String::new();
    let mut value: &[u8] = &[];
    let mut r = Reader::new(b);
    while let Some((n, w)) = r.field()? {
        match (n, w) {
            (1, Wire::Bytes(k)) => key = utf8(k)?,
            (2, Wire::Bytes(v)) => value = v,
            _ => return Err(DecodeError::Malformed("a map entry is malformed".into())),
        }
    }
    Ok((key, value))
}

fn quantity(b: &[u8]) -> Result<Value, DecodeError> {
    let mut r = Reader::new(b);
    let mut s = String::new();
    while let Some((n, w)) = r.field()? {
        if let (1, Wire::Bytes(v)) = (n, w) {
            s = utf8(v)?;
        }
    }
    Ok(Value::String(s))
}

/// `metav1.Time` (seconds and nanos): RFC 3339 at second precision, as the
/// JSON encoding writes it; the zero time is absent.
fn time(b: &[u8]) -> Result<Option<String>, DecodeError> {
    let mut r = Reader::new(b);
    let mut seconds = 0i64;
    while let Some((n, w)) = r.field()? {
        if let (1, Wire::Varint(v)) = (n, w) {
            seconds = v as i64;
        }
    }
    if seconds == 0 {
        return Ok(None);
    }
    let t = chrono::DateTime::from_timestamp(seconds, 0)
        .ok_or_else(|| DecodeError::Malformed(format!("time {seconds} is out of range")))?;
    Ok(Some(t.format("%Y-%m-%dT%H:%M:%SZ").to_string()))
}

fn int_or_string(b: &[u8]) -> Result<Value, DecodeError> {
    let mut r = Reader::new(b);
    let (mut is_string, mut int, mut string) = (false, 0i64, String::new());
    while let Some((n, w)) = r.field()? {
        match (n, w) {
            (1, Wire::Varint(v)) => is_string = v == 1,
            (2, Wire::Varint(v)) => int = v as i64,
            (3, Wire::Bytes(s)) => string = utf8(s)?,
            _ => {}
        }
    }
    Ok(if is_string {
        Value::String(string)
    } else {
        Value::from(int)
    })
}

/// One field's value on the wire.
enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed64,
    Fixed32,
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        for i in 0..10 {
            let (&byte, rest) = self
                .buf
                .split_first()
                .ok_or_else(|| DecodeError::Malformed("truncated varint".into()))?;
            self.buf = rest;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::Malformed("varint longer than 10 bytes".into()))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Malformed("truncated field".into()));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// The next field number and value, or `None` at the end.
    fn field(&mut self) -> Result<Option<(u64, Wire<'a>)>, DecodeError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let wire = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Wire::Fixed64
            }
            2 => {
                let len = usize::try_from(self.varint()?)
                    .map_err(|_| DecodeError::Malformed("length out of range".into()))?;
                Wire::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Wire::Fixed32
            }
            t => {
                return Err(DecodeError::Malformed(format!(
                    "wire type {t} is not supported"
                )));
            }
        };
        Ok(Some((key >> 3, wire)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A minimal protobuf writer for the tests (the encoder side of Reader).
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    fn bytes(n: u64, b: &[u8]) -> Vec<u8> {
        let mut out = vec![];
        varint((n << 3) | 2, &mut out);
        varint(b.len() as u64, &mut out);
        out.extend_from_slice(b);
        out
    }

    fn int(n: u64, v: u64) -> Vec<u8> {
        let mut out = vec![];
        varint(n << 3, &mut out);
        varint(v, &mut out);
        out
    }

    fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let type_meta = [bytes(1, api_version.as_bytes()), bytes(2, kind.as_bytes())].concat();
        [MAGIC.to_vec(), bytes(1, &type_meta), bytes(2, raw)].concat()
    }

    fn entry(k: &str, v: &[u8]) -> Vec<u8> {
        [bytes(1, k.as_bytes()), bytes(2, v)].concat()
    }

    #[test]
    fn a_namespace_as_kubectl_create_sends_it() {
        // metadata{name, generation 0 (non-pointer zero), empty creationTimestamp,
        // labels}, an empty spec and a status holding only an empty phase
        // (unknown to kube-sim, and zero).
        let meta = [
            bytes(1, b"demo"),
            int(7, 0),
            bytes(8, b""),
            bytes(11, &entry("env", b"prod")),
        ]
        .concat();
        let raw = [bytes(1, &meta), bytes(2, b""), bytes(3, &bytes(1, b""))].concat();
        let v = decode(&envelope("v1", "Namespace", &raw)).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": "demo", "labels": {"env": "prod"}}, "spec": {}})
        );
    }

    #[test]
    fn pointer_zeros_are_kept_and_special_types_are_converted() {
        let port = [
            int(3, 80),
            bytes(4, &[int(1, 1), bytes(3, b"http")].concat()),
        ]
        .concat();
        let container = [
            bytes(1, b"app"),
            bytes(2, b"nginx"),
            bytes(8, &bytes(1, &entry("cpu", &bytes(1, b"500m")))),
        ]
        .concat();
        let template = bytes(2, &bytes(2, &container));
        let spec = [int(1, 0), bytes(3, &template), bytes(4, b"")].concat();
        let raw = [bytes(1, &bytes(1, b"web")), bytes(2, &spec)].concat();
        let v = decode(&envelope("apps/v1", "Deployment", &raw)).unwrap();
        assert_eq!(v["spec"]["replicas"], 0, "{v}");
        assert_eq!(
            v["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"],
            "500m"
        );
        let svc = bytes(2, &bytes(1, &port));
        let v = decode(&envelope("v1", "Service", &svc)).unwrap();
        assert_eq!(
            v["spec"]["ports"][0],
            json!({"port": 80, "targetPort": "http"})
        );
        let secret = bytes(2, &entry("k", &[0xff, 0x00]));
        let v = decode(&envelope("v1", "Secret", &secret)).unwrap();
        assert_eq!(v["data"]["k"], "/wA=");
    }

    #[test]
    fn unknown_fields_and_kinds_are_refused_not_dropped() {
        // A non-empty field kube-sim has no schema for (Pod spec volumes).
        let raw = bytes(2, &bytes(1, &bytes(1, b"data")));
        match decode(&envelope("v1", "Pod", &raw)) {
            Err(DecodeError::Unsupported(m)) => assert!(m.contains("field 1 of PodSpec"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decode(&envelope("batch/v1", "Job", b"")),
            Err(DecodeError::Unsupported(_))
        ));
        assert!(matches!(decode(b"{}"), Err(DecodeError::Malformed(_))));
        // Truncated: a length that runs past the end.
        assert!(matches!(
            decode(&[MAGIC, &[0x12, 0x05, 0x01]].concat()),
            Err(DecodeError::Malformed(_))
        ));
    }
}
