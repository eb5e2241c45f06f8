//! The Docker Engine API spoken directly over its Unix socket, for the engine-alone baselines
//! (no CLI process start in the timings) and for finding and removing what a run left.

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};

use super::http::{Http, poll_health};

/// The API version every request names (the oldest this project supports).
const API: &str = "/v1.41";

/// The port the agent listens on in a ship (bay-api.md §8 `SHIP_CONTAINER_PORT`).
pub const AGENT_PORT: u16 = 8123;

/// The Docker Engine socket: `DOCKER_HOST=unix://…` or the default.
fn socket() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(str::to_owned))
        .unwrap_or_else(|| "/var/run/docker.sock".to_owned())
}

/// Percent-encodes a query value.
pub fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One connection to the engine.
#[derive(Debug)]
pub struct Engine {
    http: Http,
}

impl Engine {
    pub fn connect() -> anyhow::Result<Self> {
        Ok(Self {
            http: Http::connect_unix(&socket())?,
        })
    }

    fn call(&mut self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let body = body.map(Value::to_string);
        let a = self
            .http
            .request(method, &format!("{API}{path}"), None, body.as_deref())?;
        ensure!(
            (200..300).contains(&a.status) || a.status == 304,
            "docker {method} {path} answered {}: {}",
            a.status,
            a.body.trim()
        );
        Ok(a.json())
    }

    /// Creates, starts and waits for the agent of a container configured as Bay configures a
    /// ship with the default spec in `docker-host` mode (published port, two named volumes,
    /// default CPU and memory limits, capabilities, pids limit), labelled `label`. Returns the
    /// container id and the agent's address.
    pub fn start_ship(
        &mut self,
        image: &str,
        network: &str,
        label: (&str, &str),
        name: &str,
    ) -> anyhow::Result<(String, String)> {
        let token = format!("{name}-token");
        let volume = |suffix: &str, target: &str| {
            json!({"Type": "volume", "Source": format!("{name}-{suffix}"), "Target": target,
                   "VolumeOptions": {"Labels": {label.0: label.1}}})
        };
        let port = format!("{AGENT_PORT}/tcp");
        let body = json!({
            "Image": image,
            "Env": [format!("SHIP_AUTH_TOKEN={token}"), format!("SHIP_ID={name}"), "TTL=600",
                    format!("SHIP_PORT={AGENT_PORT}")],
            "ExposedPorts": {&port: {}},
            "Labels": {label.0: label.1},
            "StopTimeout": 5,
            "HostConfig": {
                "NetworkMode": network,
                "PortBindings": {&port: [{"HostIp": "127.0.0.1", "HostPort": ""}]},
                "Mounts": [volume("home", "/home"), volume("metadata", "/app/metadata")],
                "NanoCpus": 1_000_000_000_i64,
                "Memory": 512_i64 << 20,
                "MemorySwap": 512_i64 << 20,
                "PidsLimit": 512,
                "CapDrop": ["ALL"],
                "CapAdd": ["CHOWN", "DAC_OVERRIDE", "FOWNER", "SETUID", "SETGID", "KILL"],
                "SecurityOpt": ["no-new-privileges:true"],
            },
            "NetworkingConfig": {"EndpointsConfig": {network: {}}},
        });
        let created = self.call(
            "POST",
            &format!("/containers/create?name={}", encode(name)),
            Some(&body),
        )?;
        let id = created["Id"]
            .as_str()
            .context("docker create answered no Id")?
            .to_owned();
        self.call("POST", &format!("/containers/{id}/start"), None)?;
        let inspect = self.call("GET", &format!("/containers/{id}/json"), None)?;
        let host_port = inspect["NetworkSettings"]["Ports"][&port][0]["HostPort"]
            .as_str()
            .with_context(|| format!("container {id} publishes no port"))?;
        let addr = format!("127.0.0.1:{host_port}");
        // Polled as tightly as Bay's readiness check starts (5 ms).
        if !poll_health(
            &addr,
            Some(&token),
            Duration::from_millis(5),
            Duration::from_secs(60),
        ) {
            bail!("the agent of baseline container {id} did not answer /health within 60 s");
        }
        Ok((id, addr))
    }

    /// What a permanent delete does, without Bay: stop (SIGTERM, 5 s grace), remove the
    /// container, remove its volumes.
    pub fn delete_ship(&mut self, id: &str, name: &str) -> anyhow::Result<()> {
        self.call("POST", &format!("/containers/{id}/stop?t=5"), None)?;
        self.call(
            "DELETE",
            &format!("/containers/{id}?force=true&v=true"),
            None,
        )?;
        for suffix in ["home", "metadata"] {
            self.call("DELETE", &format!("/volumes/{name}-{suffix}"), None)?;
        }
        Ok(())
    }

    /// Ids of the containers (also stopped ones) matching Docker `filters` (e.g.
    /// `{"label": ["a=b"]}`), with their labels.
    pub fn containers(&mut self, filters: &Value) -> anyhow::Result<Vec<(String, Value)>> {
        let list = self.call(
            "GET",
            &format!(
                "/containers/json?all=true&filters={}",
                encode(&filters.to_string())
            ),
            None,
        )?;
        Ok(list
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| Some((c["Id"].as_str()?.to_owned(), c["Labels"].clone())))
            .collect())
    }

    /// Names of the volumes matching Docker `filters`.
    pub fn volumes(&mut self, filters: &Value) -> anyhow::Result<Vec<String>> {
        let list = self.call(
            "GET",
            &format!("/volumes?filters={}", encode(&filters.to_string())),
            None,
        )?;
        Ok(list["Volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v["Name"].as_str().map(str::to_owned))
            .collect())
    }

    /// Force-removes a container and its anonymous volumes (a missing one is fine).
    pub fn remove_container(&mut self, id: &str) -> anyhow::Result<()> {
        let a = self.http.request(
            "DELETE",
            &format!("{API}/containers/{id}?force=true&v=true"),
            None,
            None,
        )?;
        ensure!(
            a.status < 300 || a.status == 404,
            "docker rm {id}: {} {}",
            a.status,
            a.body.trim()
        );
        Ok(())
    }

    /// Removes a volume (a missing one is fine).
    pub fn remove_volume(&mut self, name: &str) -> anyhow::Result<()> {
        let a = self
            .http
            .request("DELETE", &format!("{API}/volumes/{name}"), None, None)?;
        ensure!(
            a.status < 300 || a.status == 404,
            "docker volume rm {name}: {} {}",
            a.status,
            a.body.trim()
        );
        Ok(())
    }

    /// Removes a network (a missing one is fine).
    pub fn remove_network(&mut self, name: &str) -> anyhow::Result<()> {
        let a = self
            .http
            .request("DELETE", &format!("{API}/networks/{name}"), None, None)?;
        ensure!(
            a.status < 300 || a.status == 404,
            "docker network rm {name}: {} {}",
            a.status,
            a.body.trim()
        );
        Ok(())
    }

    /// Force-disconnects the container `name` from `network`: the way to clear an endpoint the
    /// engine kept after the container was removed (Docker 20.10 does under concurrent
    /// removals, and then refuses to remove the network). Errors are ignored.
    pub fn disconnect(&mut self, network: &str, name: &str) {
        let body = json!({"Container": name, "Force": true}).to_string();
        let _ = self.http.request(
            "POST",
            &format!("{API}/networks/{network}/disconnect"),
            None,
            Some(&body),
        );
    }

    /// The engine's `/version` answer.
    pub fn version(&mut self) -> anyhow::Result<Value> {
        self.call("GET", "/version", None)
    }

    /// The environment of a container (`KEY=value` strings).
    pub fn env(&mut self, id: &str) -> anyhow::Result<Vec<String>> {
        let inspect = self.call("GET", &format!("/containers/{id}/json"), None)?;
        Ok(inspect["Config"]["Env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e.as_str().map(str::to_owned))
            .collect())
    }

    /// A container's memory as `docker stats` shows it: the cgroup's usage without the
    /// inactive page cache, in bytes.
    pub fn memory(&mut self, id: &str) -> anyhow::Result<u64> {
        let stats = self.call(
            "GET",
            &format!("/containers/{id}/stats?stream=false&one-shot=true"),
            None,
        )?;
        let m = &stats["memory_stats"];
        let usage = m["usage"]
            .as_u64()
            .with_context(|| format!("no memory usage in the stats of container {id}"))?;
        let cache = m["stats"]["inactive_file"]
            .as_u64()
            .or_else(|| m["stats"]["total_inactive_file"].as_u64())
            .unwrap_or(0);
        Ok(usage.saturating_sub(cache))
    }

    /// Waits until `count` containers match `filters` and run, for at most `timeout`.
    pub fn wait_running(&mut self, filters: &Value, count: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut filters = filters.clone();
        filters["status"] = json!(["running"]);
        loop {
            if self.containers(&filters).is_ok_and(|c| c.len() >= count) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_query_values() {
        assert_eq!(
            encode(r#"{"label":["a=b"]}"#),
            "%7B%22label%22%3A%5B%22a%3Db%22%5D%7D"
        );
        assert_eq!(encode("bay-bench_1.x~"), "bay-bench_1.x~");
    }
}
