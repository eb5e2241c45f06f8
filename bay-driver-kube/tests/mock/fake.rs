//! A small simulated Kubernetes API server behind `tower_test::mock::pair` (the "API server
//! verifier" pattern of kube-rs's own tests): it keeps Pods, PVCs and Secrets of one namespace
//! as JSON, answers create/get/delete/patch/list/watch/log like the real one (201, 404 and 409
//! with `Status` bodies), moves new Pods to Running and Ready through a watch event, records
//! every request, and injects faults (an error status, a dropped connection, no answer).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bay_driver_kube::{KubeDriver, KubeSettings};
use http::{Method, Request, Response};
use http_body_util::BodyExt;
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock::SendResponse;

pub const NS: &str = "bay-test";
pub const POD_IP: &str = "10.1.2.3";

/// What happens to a new Pod once the driver watches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// It becomes Running and Ready with an IP.
    Ready,
    /// Its image cannot be found (`ErrImageNeverPull`).
    ImageMissing,
    /// It stays Pending; watches never answer.
    Pending,
}

/// An injected answer.
#[derive(Debug, Clone)]
pub enum Reply {
    /// An error `Status` with this code.
    Status(u16),
    /// The connection fails (no HTTP answer at all).
    Drop,
    /// No answer ever.
    Hang,
}

#[derive(Debug)]
struct Fault {
    method: Method,
    path: String,
    reply: Reply,
}

#[derive(Debug)]
pub struct State {
    pub objects: BTreeMap<(String, String), Value>,
    pub requests: Vec<String>,
    pub fate: Fate,
    pub logs: String,
    faults: Vec<Fault>,
    version: u64,
    parked: Vec<SendResponse<Response<Body>>>,
}

/// The fake API server; cheap to clone.
#[derive(Clone)]
pub struct Fake(pub Arc<Mutex<State>>);

impl Fake {
    /// A fake API server and a driver talking to it.
    pub fn start(settings: KubeSettings) -> (Self, KubeDriver) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, NS);
        let fake = Self(Arc::new(Mutex::new(State {
            objects: BTreeMap::new(),
            requests: Vec::new(),
            fate: Fate::Ready,
            logs: String::new(),
            faults: Vec::new(),
            version: 1,
            parked: Vec::new(),
        })));
        let server = fake.clone();
        tokio::spawn(async move {
            while let Some((req, send)) = handle.next_request().await {
                let server = server.clone();
                tokio::spawn(async move { server.serve(req, send).await });
            }
        });
        (fake, KubeDriver::with_client(settings, client))
    }

    /// Answers the next request matching `method` and a path containing `path` with `reply`.
    pub fn fault(&self, method: Method, path: &str, reply: Reply) {
        self.0.lock().unwrap().faults.push(Fault {
            method,
            path: path.to_owned(),
            reply,
        });
    }

    pub fn set_fate(&self, fate: Fate) {
        self.0.lock().unwrap().fate = fate;
    }

    pub fn set_logs(&self, logs: &str) {
        self.0.lock().unwrap().logs = logs.to_owned();
    }

    /// The requests so far, as `METHOD path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.0.lock().unwrap().requests.clone()
    }

    /// Requests with this method whose path contains `part`.
    pub fn count(&self, method: &str, part: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.starts_with(&format!("{method} ")) && r.contains(part))
            .count()
    }

    pub fn get(&self, kind: &str, name: &str) -> Option<Value> {
        self.0
            .lock()
            .unwrap()
            .objects
            .get(&(kind.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Stores an object as if created earlier (`kind` = `pods`, `persistentvolumeclaims`, …).
    pub fn put(&self, kind: &str, mut object: Value) {
        let mut st = self.0.lock().unwrap();
        st.version += 1;
        let name = object["metadata"]["name"].as_str().unwrap().to_owned();
        object["metadata"]["resourceVersion"] = json!(st.version.to_string());
        if object["metadata"]["uid"].is_null() {
            object["metadata"]["uid"] = json!(format!("uid-{}", st.version));
        }
        object["metadata"]["namespace"] = json!(NS);
        st.objects.insert((kind.to_owned(), name), object);
    }

    async fn serve(&self, req: Request<Body>, send: SendResponse<Response<Body>>) {
        let method = req.method().clone();
        let uri = req.uri().clone();
        let path = uri.path().to_owned();
        let query = uri.query().unwrap_or_default().to_owned();
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes().to_vec())
            .unwrap_or_default();
        let fault = {
            let mut st = self.0.lock().unwrap();
            st.requests.push(format!("{method} {path}?{query}"));
            let i = st
                .faults
                .iter()
                .position(|f| f.method == method && path.contains(&f.path));
            i.map(|i| st.faults.remove(i).reply)
        };
        match fault {
            Some(Reply::Status(code)) => return send.send_response(status(code, "injected")),
            Some(Reply::Drop) => return send.send_error("connection reset by peer (injected)"),
            Some(Reply::Hang) => {
                self.0.lock().unwrap().parked.push(send);
                return;
            }
            None => {}
        }
        if path == "/version" {
            return send.send_response(ok(json!({
                "major": "1", "minor": "20", "gitVersion": "v1.20.2", "gitCommit": "x",
                "gitTreeState": "clean", "buildDate": "2021-01-13T13:20:00Z",
                "goVersion": "go1.19", "compiler": "gc", "platform": "linux/amd64"
            })));
        }
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        // api/v1/namespaces/<ns>/<kind>[/<name>[/<sub>]]
        if parts.len() < 5 || parts[..3] != ["api", "v1", "namespaces"] || parts[3] != NS {
            return send.send_response(status(404, &format!("no route {path}")));
        }
        let kind = parts[4].to_owned();
        let name = parts.get(5).map(|s| (*s).to_owned());
        let sub = parts.get(6).copied();
        let watch = query.split('&').any(|p| p == "watch=true");
        match (method.as_str(), name, sub) {
            ("GET", None, _) if watch => self.watch(&kind, &query, send),
            ("GET", None, _) => send.send_response(self.list(&kind, &query)),
            ("POST", None, _) => send.send_response(self.create(&kind, &body)),
            ("GET", Some(name), Some("log")) => {
                let st = self.0.lock().unwrap();
                if st.objects.contains_key(&(kind, name.clone())) {
                    send.send_response(Response::new(Body::from(st.logs.clone().into_bytes())))
                } else {
                    send.send_response(status(404, &format!("pods \"{name}\" not found")))
                }
            }
            ("GET", Some(name), None) => match self.get(&kind, &name) {
                Some(o) => send.send_response(ok(o)),
                None => send.send_response(status(404, &format!("{kind} \"{name}\" not found"))),
            },
            ("DELETE", Some(name), None) => {
                let removed = self
                    .0
                    .lock()
                    .unwrap()
                    .objects
                    .remove(&(kind.clone(), name.clone()));
                match removed {
                    Some(o) => send.send_response(ok(o)),
                    None => {
                        send.send_response(status(404, &format!("{kind} \"{name}\" not found")))
                    }
                }
            }
            ("PATCH", Some(name), None) => {
                let patch: Value = serde_json::from_slice(&body).unwrap();
                let mut st = self.0.lock().unwrap();
                match st.objects.get_mut(&(kind.clone(), name.clone())) {
                    Some(o) => {
                        merge(o, &patch);
                        let o = o.clone();
                        send.send_response(ok(o))
                    }
                    None => send.send_response(status(404, "not found")),
                }
            }
            _ => send.send_response(status(405, "unsupported by the fake")),
        }
    }

    fn create(&self, kind: &str, body: &[u8]) -> Response<Body> {
        let mut object: Value = serde_json::from_slice(body).expect("a JSON object");
        let name = object["metadata"]["name"].as_str().unwrap().to_owned();
        if self.get(kind, &name).is_some() {
            return status(409, &format!("{kind} \"{name}\" already exists"));
        }
        if kind == "pods" {
            object["status"] = json!({"phase": "Pending"});
        }
        if kind == "persistentvolumeclaims" {
            object["status"] = json!({"phase": "Bound"});
        }
        self.put(kind, object);
        let mut resp = ok(self.get(kind, &name).unwrap());
        *resp.status_mut() = http::StatusCode::CREATED;
        resp
    }

    fn list(&self, kind: &str, query: &str) -> Response<Body> {
        let selector = query
            .split('&')
            .find_map(|p| p.strip_prefix("labelSelector="))
            .map(|s| s.replace("%3D", "=").replace("%2C", ","))
            .unwrap_or_default();
        let st = self.0.lock().unwrap();
        let items: Vec<Value> = st
            .objects
            .iter()
            .filter(|((k, _), _)| k == kind)
            .map(|(_, o)| o.clone())
            .filter(|o| {
                selector.split(',').filter(|s| !s.is_empty()).all(|kv| {
                    let (k, v) = kv.split_once('=').unwrap();
                    o["metadata"]["labels"][k] == v
                })
            })
            .collect();
        ok(json!({
            "apiVersion": "v1", "kind": "List",
            "metadata": {"resourceVersion": st.version.to_string()},
            "items": items,
        }))
    }

    /// A watch of one Pod (field selector `metadata.name=`): the events its fate brings.
    fn watch(&self, kind: &str, query: &str, send: SendResponse<Response<Body>>) {
        let name = query
            .split('&')
            .find_map(|p| p.strip_prefix("fieldSelector="))
            .map(|s| s.replace("%3D", "="))
            .and_then(|s| s.strip_prefix("metadata.name=").map(str::to_owned))
            .expect("watches select one object by name");
        let mut st = self.0.lock().unwrap();
        let key = (kind.to_owned(), name);
        let Some(mut pod) = st.objects.get(&key).cloned() else {
            drop(st);
            return send.send_response(Response::new(Body::from(Vec::new())));
        };
        st.version += 1;
        pod["metadata"]["resourceVersion"] = json!(st.version.to_string());
        let event = if !pod["metadata"]["deletionTimestamp"].is_null() {
            st.objects.remove(&key);
            json!({"type": "DELETED", "object": pod})
        } else {
            match st.fate {
                Fate::Pending => {
                    st.parked.push(send);
                    return;
                }
                Fate::Ready => {
                    pod["status"] = json!({
                        "phase": "Running", "podIP": POD_IP,
                        "conditions": [{"type": "Ready", "status": "True"}],
                    });
                }
                Fate::ImageMissing => {
                    pod["status"] = json!({
                        "phase": "Pending",
                        "containerStatuses": [{
                            "name": "ship", "image": "ship:latest", "imageID": "",
                            "ready": false, "restartCount": 0,
                            "state": {"waiting": {"reason": "ErrImageNeverPull",
                                "message": "Container image \"ship:latest\" is not present with pull policy of Never"}},
                        }],
                    });
                }
            }
            st.objects.insert(key, pod.clone());
            json!({"type": "MODIFIED", "object": pod})
        };
        drop(st);
        let mut line = serde_json::to_vec(&event).unwrap();
        line.push(b'\n');
        send.send_response(Response::new(Body::from(line)));
    }
}

fn ok(value: Value) -> Response<Body> {
    Response::new(Body::from(serde_json::to_vec(&value).unwrap()))
}

/// An error answer with a `Status` body, as the API server sends.
pub fn status(code: u16, message: &str) -> Response<Body> {
    let reason = match code {
        404 => "NotFound",
        409 => "AlreadyExists",
        403 => "Forbidden",
        503 => "ServiceUnavailable",
        _ => "InternalError",
    };
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    });
    let mut resp = Response::new(Body::from(serde_json::to_vec(&body).unwrap()));
    *resp.status_mut() = http::StatusCode::from_u16(code).unwrap();
    resp
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}
