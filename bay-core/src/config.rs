//! Configuration: every setting of bay-api.md §8, read once from the process environment and
//! an optional `.env` file, typed and validated.
//!
//! This is the only module of Bay's libraries that reads environment variables. Names are
//! case-insensitive, the process environment wins over `.env`, unknown `.env` keys are ignored
//! with a warning, and an invalid value fails with an error naming the variable and the value.
//!
//! ```
//! use bay_core::config::{Config, DriverKind};
//! let config = Config::from_pairs([("max_ship_num", "3"), ("CONTAINER_DRIVER", "Docker")]).unwrap();
//! assert_eq!(config.max_ship_num, 3);
//! assert_eq!(config.container_driver, DriverKind::Docker);
//! let err = Config::from_pairs([("PORT", "eighty")]).unwrap_err();
//! assert_eq!(err.to_string(), "invalid PORT \"eighty\": expected an integer from 0 to 65535");
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::model::parse_size;

/// Start-up configuration error: names the variable and the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A variable has a value that cannot be used.
    #[error("invalid {var} {value:?}: {reason}")]
    Invalid {
        /// the variable's canonical name
        var: &'static str,
        /// the value as given
        value: String,
        /// what was expected
        reason: String,
    },
    /// The `.env` file exists but cannot be read.
    #[error("cannot read {path}: {reason}")]
    DotEnv {
        /// the file
        path: String,
        /// why
        reason: String,
    },
}

/// Which container driver Bay uses (`CONTAINER_DRIVER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverKind {
    /// Docker, ships reached by container IP on `DOCKER_NETWORK`.
    Docker,
    /// Docker, ships reached through ports published on 127.0.0.1.
    DockerHost,
    /// Podman, ships reached by container IP.
    Podman,
    /// Podman, ships reached through ports published on 127.0.0.1.
    PodmanHost,
    /// Kubernetes: a Pod and a PVC per ship.
    Kubernetes,
}

impl DriverKind {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Docker => "docker",
            Self::DockerHost => "docker-host",
            Self::Podman => "podman",
            Self::PodmanHost => "podman-host",
            Self::Kubernetes => "kubernetes",
        }
    }

    /// Host modes reach ships through a port published on the host (`IP:port` addresses).
    pub fn is_host_mode(self) -> bool {
        matches!(self, Self::DockerHost | Self::PodmanHost)
    }
}

/// Which Podman API the Podman driver speaks (`PODMAN_API`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodmanApi {
    /// Decided at initialisation from Podman's version: libpod below 5, compatible from 5 on.
    Auto,
    /// The libpod API (Podman 4 only; refused against Podman 5 and later).
    Libpod,
    /// The Docker-compatible API (every Podman version).
    Compat,
}

impl PodmanApi {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Libpod => "libpod",
            Self::Compat => "compat",
        }
    }
}

/// What `POST /ship` does at the ship limit (`BEHAVIOR_AFTER_MAX_SHIP`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxShipBehavior {
    /// Answer at once with "Maximum number of ships reached".
    Reject,
    /// Queue fairly for at most `MAX_SHIP_WAIT_SECONDS`.
    Wait,
}

/// Log output format (`LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// How the terminal WebSocket rejects a client (`WS_REJECT_MODE`, bay-api.md §4.18).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsRejectMode {
    /// Close codes for browsers, handshake statuses for other clients.
    Auto,
    /// Always accept, then close with a code.
    Close,
    /// Always refuse the handshake with an HTTP status.
    Handshake,
}

/// Allowed CORS origins (`CORS_ALLOW_ORIGINS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    /// CORS disabled (empty value).
    Disabled,
    /// Any origin (`*`).
    Any,
    /// These origins exactly.
    List(Vec<String>),
}

/// Bay's typed configuration. Build it with [`Config::from_env`] (process environment and
/// `.env`) or [`Config::from_pairs`] (explicit values, for embedding and tests).
#[derive(Debug, Clone)]
pub struct Config {
    /// `HOST`: bind address.
    pub host: String,
    /// `PORT`: bind port.
    pub port: u16,
    /// `DEBUG`: debug logging.
    pub debug: bool,
    /// `LOG_LEVEL`: `error`, `warn`, `info`, `debug` or `trace`.
    pub log_level: String,
    /// `LOG_FORMAT`: `text` or `json`.
    pub log_format: LogFormat,
    /// `ACCESS_TOKEN`: the API bearer token.
    pub access_token: String,
    /// `DATABASE_URL` as given.
    pub database_url: String,
    /// The SQLite file that `DATABASE_URL` names (`:memory:` is kept as is).
    pub database_path: PathBuf,
    /// `CONTAINER_DRIVER`.
    pub container_driver: DriverKind,
    /// `MAX_SHIP_NUM`: ships in status 1 or 2; `0` = unlimited.
    pub max_ship_num: u32,
    /// `WARM_POOL_SIZE`: ships kept created, started and healthy with the default spec and no
    /// session, handed to creates that fit; `0` = no pool. At most `MAX_SHIP_NUM` when that is
    /// limited.
    pub warm_pool_size: u32,
    /// `BEHAVIOR_AFTER_MAX_SHIP`.
    pub behavior_after_max_ship: MaxShipBehavior,
    /// `MAX_SHIP_WAIT_SECONDS`: bound of the wait-mode queue.
    pub max_ship_wait: Duration,
    /// `DOCKER_IMAGE`: the ship image.
    pub docker_image: String,
    /// `DOCKER_NETWORK`: network for ships; `None` = none.
    pub docker_network: Option<String>,
    /// `SHIP_CONTAINER_PORT`: the agent's port inside the container.
    pub ship_container_port: u16,
    /// `SHIP_DATA_DIR`: host directories for ship data; `None` = named volumes.
    pub ship_data_dir: Option<PathBuf>,
    /// `SHIP_DATA_HOST_DIR`: the same root as the engine sees it.
    pub ship_data_host_dir: Option<PathBuf>,
    /// `DEFAULT_SHIP_TTL`: default ttl of `/ship/{id}/start`, in seconds.
    pub default_ship_ttl: i64,
    /// `DEFAULT_SHIP_CPUS`: `None` when disabled (`0`).
    pub default_ship_cpus: Option<f64>,
    /// `DEFAULT_SHIP_MEMORY` in bytes: `None` when disabled (empty).
    pub default_ship_memory: Option<u64>,
    /// `DEFAULT_SHIP_DISK` (or `KUBE_PVC_SIZE`) in bytes.
    pub default_ship_disk: u64,
    /// `MAX_TTL`: upper bound of every ttl and expiry, in seconds.
    pub max_ttl: i64,
    /// `MAX_REQUEST_BODY`: JSON body limit in bytes.
    pub max_request_body: u64,
    /// `MAX_UPLOAD_SIZE`: upload file-part limit in bytes.
    pub max_upload_size: u64,
    /// `SHIP_HEALTH_CHECK_TIMEOUT`: readiness budget (wall clock).
    pub ship_health_check_timeout: Duration,
    /// `SHIP_READY_POLL_MS` (or the deprecated `SHIP_HEALTH_CHECK_INTERVAL`): the slowest
    /// readiness poll interval; polling starts faster and backs off to it.
    pub ship_ready_poll: Duration,
    /// `STATUS_CHECK_INTERVAL`: periodic container check.
    pub status_check_interval: Duration,
    /// `SHIP_EXEC_TIMEOUT` in seconds.
    pub ship_exec_timeout: u64,
    /// `SHIP_EXEC_TIMEOUT_GRACE` in seconds.
    pub ship_exec_timeout_grace: u64,
    /// `SHIP_EXEC_MAX_TIMEOUT` in seconds.
    pub ship_exec_max_timeout: u64,
    /// `SHIP_TRANSFER_TIMEOUT`: upload/download idle timeout.
    pub ship_transfer_timeout: Duration,
    /// `CORS_ALLOW_ORIGINS`.
    pub cors_allow_origins: CorsOrigins,
    /// `CORS_ALLOW_CREDENTIALS`.
    pub cors_allow_credentials: bool,
    /// `WS_REJECT_MODE`.
    pub ws_reject_mode: WsRejectMode,
    /// `KUBE_NAMESPACE` when set explicitly.
    pub kube_namespace: Option<String>,
    /// `KUBE_CONFIG_PATH`; `None` = client default.
    pub kube_config_path: Option<String>,
    /// `KUBE_IMAGE_PULL_POLICY`.
    pub kube_image_pull_policy: String,
    /// `KUBE_STORAGE_CLASS`; `None` = omitted.
    pub kube_storage_class: Option<String>,
    /// `PODMAN_SOCKET`: the Podman API socket (a path or `unix://` URL); `None` = discovered.
    pub podman_socket: Option<String>,
    /// `PODMAN_API`: `auto` (default: libpod below Podman 5, compatible from 5 on), `libpod`
    /// or `compat`.
    pub podman_api: PodmanApi,
    /// `XDG_RUNTIME_DIR`: where the rootless Podman socket is looked for.
    pub xdg_runtime_dir: Option<PathBuf>,
    /// Warnings found while reading (unknown `.env` keys, the default token); log them.
    pub warnings: Vec<String>,
}

/// Every variable Bay reads (canonical spelling), for `.env` key checking.
const KNOWN: &[&str] = &[
    "HOST",
    "PORT",
    "DEBUG",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "ACCESS_TOKEN",
    "DATABASE_URL",
    "CONTAINER_DRIVER",
    "MAX_SHIP_NUM",
    "WARM_POOL_SIZE",
    "BEHAVIOR_AFTER_MAX_SHIP",
    "MAX_SHIP_WAIT_SECONDS",
    "DOCKER_IMAGE",
    "DOCKER_NETWORK",
    "SHIP_CONTAINER_PORT",
    "SHIP_DATA_DIR",
    "SHIP_DATA_HOST_DIR",
    "DEFAULT_SHIP_TTL",
    "DEFAULT_SHIP_CPUS",
    "DEFAULT_SHIP_MEMORY",
    "DEFAULT_SHIP_DISK",
    "KUBE_PVC_SIZE",
    "MAX_TTL",
    "MAX_REQUEST_BODY",
    "MAX_UPLOAD_SIZE",
    "SHIP_HEALTH_CHECK_TIMEOUT",
    "SHIP_READY_POLL_MS",
    "SHIP_HEALTH_CHECK_INTERVAL",
    "STATUS_CHECK_INTERVAL",
    "SHIP_EXEC_TIMEOUT",
    "SHIP_EXEC_TIMEOUT_GRACE",
    "SHIP_EXEC_MAX_TIMEOUT",
    "SHIP_TRANSFER_TIMEOUT",
    "CORS_ALLOW_ORIGINS",
    "CORS_ALLOW_CREDENTIALS",
    "WS_REJECT_MODE",
    "KUBE_NAMESPACE",
    "KUBE_CONFIG_PATH",
    "KUBE_IMAGE_PULL_POLICY",
    "KUBE_STORAGE_CLASS",
    "PODMAN_SOCKET",
    "PODMAN_API",
    "XDG_RUNTIME_DIR",
];

/// The raw values, keyed by upper-cased name.
struct Source {
    values: BTreeMap<String, String>,
}

impl Source {
    fn get(&self, var: &str) -> Option<&str> {
        self.values.get(var).map(String::as_str)
    }

    fn string(&self, var: &'static str, default: &str) -> String {
        self.get(var).unwrap_or(default).to_owned()
    }

    fn optional_string(&self, var: &'static str) -> Option<String> {
        self.get(var)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    }

    fn parse<T: std::str::FromStr>(
        &self,
        var: &'static str,
        default: T,
        expected: &str,
    ) -> Result<T, ConfigError> {
        match self.get(var) {
            None => Ok(default),
            Some(raw) => raw.trim().parse().map_err(|_| invalid(var, raw, expected)),
        }
    }

    fn int_in(
        &self,
        var: &'static str,
        default: i64,
        min: i64,
        max: i64,
    ) -> Result<i64, ConfigError> {
        let expected = format!("expected an integer from {min} to {max}");
        let v: i64 = self.parse(var, default, &expected)?;
        if v < min || v > max {
            return Err(invalid(var, self.get(var).unwrap_or_default(), &expected));
        }
        Ok(v)
    }

    fn seconds(&self, var: &'static str, default: i64, min: i64) -> Result<u64, ConfigError> {
        let v = self.int_in(var, default, min, i64::from(u32::MAX))?;
        Ok(u64::try_from(v).unwrap_or(0))
    }

    fn boolean(&self, var: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.get(var) {
            None => Ok(default),
            Some(raw) => parse_bool(raw)
                .ok_or_else(|| invalid(var, raw, "expected true/false/1/0/yes/no/on/off")),
        }
    }

    fn choice<T: Copy>(
        &self,
        var: &'static str,
        default: T,
        options: &[(&str, T)],
    ) -> Result<T, ConfigError> {
        let Some(raw) = self.get(var) else {
            return Ok(default);
        };
        let wanted = raw.trim().to_ascii_lowercase();
        options
            .iter()
            .find(|(name, _)| *name == wanted)
            .map(|(_, v)| *v)
            .ok_or_else(|| {
                let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
                invalid(var, raw, &format!("expected one of {}", names.join(", ")))
            })
    }

    fn size(&self, var: &'static str, raw: &str) -> Result<u64, ConfigError> {
        parse_size(raw).ok_or_else(|| {
            invalid(
                var,
                raw,
                "expected a size such as 512m, 1Gi, 512mb or plain bytes",
            )
        })
    }
}

fn invalid(var: &'static str, value: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        var,
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

fn parse_bool(raw: &str) -> Option<bool> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// Turns a `DATABASE_URL` into the SQLite file it names.
///
/// ```
/// use bay_core::config::database_path;
/// use std::path::Path;
/// assert_eq!(database_path("sqlite+aiosqlite:///./bay.db").unwrap(), Path::new("./bay.db"));
/// assert_eq!(database_path("sqlite+aiosqlite:////var/lib/bay.db").unwrap(), Path::new("/var/lib/bay.db"));
/// assert_eq!(database_path("sqlite:///tmp/x.db").unwrap(), Path::new("/tmp/x.db"));
/// assert_eq!(database_path("sqlite://data/x.db").unwrap(), Path::new("data/x.db"));
/// assert_eq!(database_path("/srv/bay.db").unwrap(), Path::new("/srv/bay.db"));
/// assert!(database_path("postgres://x").is_err());
/// ```
pub fn database_path(url: &str) -> Result<PathBuf, String> {
    let url = url.trim();
    if url.is_empty() {
        return Err("expected a SQLite path or URL".into());
    }
    let rest = if let Some(rest) = url.strip_prefix("sqlite+aiosqlite://") {
        // SQLAlchemy form: `///relative` or `////absolute`.
        rest.strip_prefix('/')
            .ok_or_else(|| "expected sqlite+aiosqlite:///<path>".to_owned())?
    } else if let Some(rest) = url.strip_prefix("sqlite://") {
        rest
    } else if let Some(rest) = url.strip_prefix("sqlite:") {
        rest
    } else if url.contains("://") {
        return Err("only SQLite is supported: expected a path, sqlite://<path> or sqlite+aiosqlite:///<path>".into());
    } else {
        url
    };
    let rest = rest.split('?').next().unwrap_or(rest);
    if rest.is_empty() {
        return Err("the URL names no database file".into());
    }
    Ok(PathBuf::from(rest))
}

/// Parses a `.env` file: `KEY=VALUE` lines, `#` comments, optional `export ` and quotes.
fn parse_dotenv(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let mut value = value.trim();
        if value.len() >= 2
            && ((value.starts_with('"') && value.ends_with('"'))
                || (value.starts_with('\'') && value.ends_with('\'')))
        {
            value = &value[1..value.len() - 1];
        } else if let Some(idx) = value.find(" #") {
            value = value[..idx].trim_end();
        }
        out.push((key.trim().to_owned(), value.to_owned()));
    }
    out
}

impl Config {
    /// Reads the process environment and `./.env` (the process environment wins).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_env_and_dotenv(Path::new(".env"))
    }

    /// Reads the process environment and the given `.env` file, if it exists.
    pub fn from_env_and_dotenv(dotenv: &Path) -> Result<Self, ConfigError> {
        let mut warnings = Vec::new();
        let mut values = BTreeMap::new();
        match std::fs::read_to_string(dotenv) {
            Ok(text) => {
                for (key, value) in parse_dotenv(&text) {
                    let upper = key.to_ascii_uppercase();
                    if !KNOWN.contains(&upper.as_str()) {
                        warnings.push(format!(
                            "ignoring unknown key {key:?} in {}",
                            dotenv.display()
                        ));
                        continue;
                    }
                    values.insert(upper, value);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(ConfigError::DotEnv {
                    path: dotenv.display().to_string(),
                    reason: e.to_string(),
                });
            }
        }
        for (key, value) in std::env::vars_os() {
            let (Some(key), Some(value)) = (key.to_str(), value.to_str()) else {
                continue;
            };
            let upper = key.to_ascii_uppercase();
            if KNOWN.contains(&upper.as_str()) {
                values.insert(upper, value.to_owned());
            }
        }
        let mut config = Self::from_source(&Source { values })?;
        warnings.append(&mut config.warnings);
        config.warnings = warnings;
        Ok(config)
    }

    /// Builds a configuration from explicit name/value pairs (names case-insensitive); every
    /// other setting takes its default. Nothing is read from the environment.
    pub fn from_pairs<K: AsRef<str>, V: AsRef<str>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, ConfigError> {
        let values = pairs
            .into_iter()
            .map(|(k, v)| (k.as_ref().to_ascii_uppercase(), v.as_ref().to_owned()))
            .collect();
        Self::from_source(&Source { values })
    }

    fn from_source(src: &Source) -> Result<Self, ConfigError> {
        let mut warnings = Vec::new();
        let debug = src.boolean("DEBUG", false)?;
        let log_level = match src.get("LOG_LEVEL") {
            Some(raw) => {
                let l = raw.trim().to_ascii_lowercase();
                let l = if l == "warning" { "warn".to_owned() } else { l };
                if !["error", "warn", "info", "debug", "trace"].contains(&l.as_str()) {
                    return Err(invalid(
                        "LOG_LEVEL",
                        raw,
                        "expected one of error, warn, info, debug, trace",
                    ));
                }
                l
            }
            None if debug => "debug".to_owned(),
            None => "info".to_owned(),
        };
        let access_token = src.string("ACCESS_TOKEN", "secret-token");
        if access_token == "secret-token" {
            warnings.push(
                "ACCESS_TOKEN is the default \"secret-token\": set a secret token before exposing Bay"
                    .to_owned(),
            );
        }
        if access_token.is_empty() {
            return Err(invalid("ACCESS_TOKEN", "", "expected a non-empty token"));
        }
        let database_url = src.string("DATABASE_URL", "sqlite+aiosqlite:///./bay.db");
        let database_path =
            database_path(&database_url).map_err(|r| invalid("DATABASE_URL", &database_url, &r))?;

        if src
            .get("CONTAINER_DRIVER")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("containerd"))
        {
            return Err(invalid(
                "CONTAINER_DRIVER",
                src.get("CONTAINER_DRIVER").unwrap_or_default(),
                "containerd driver is not yet implemented. Please use one of: docker, docker-host, kubernetes, podman, podman-host",
            ));
        }
        let container_driver = src.choice(
            "CONTAINER_DRIVER",
            DriverKind::DockerHost,
            &[
                ("docker", DriverKind::Docker),
                ("docker-host", DriverKind::DockerHost),
                ("podman", DriverKind::Podman),
                ("podman-host", DriverKind::PodmanHost),
                ("kubernetes", DriverKind::Kubernetes),
            ],
        )?;

        let default_ship_cpus = {
            let v: f64 = src.parse(
                "DEFAULT_SHIP_CPUS",
                1.0,
                "expected a number of CPUs (0 disables)",
            )?;
            if !v.is_finite() || !(0.0..=crate::model::MAX_CPUS).contains(&v) {
                return Err(invalid(
                    "DEFAULT_SHIP_CPUS",
                    src.get("DEFAULT_SHIP_CPUS").unwrap_or_default(),
                    "expected a number of CPUs from 0 (disabled) to 256",
                ));
            }
            (v > 0.0).then_some(v)
        };
        let default_ship_memory = match src.get("DEFAULT_SHIP_MEMORY") {
            None => Some(512 << 20),
            Some(raw) if raw.trim().is_empty() => None,
            Some(raw) => Some(
                src.size("DEFAULT_SHIP_MEMORY", raw)?
                    .max(crate::model::MIN_MEMORY_BYTES),
            ),
        };
        let default_ship_disk = match (src.get("DEFAULT_SHIP_DISK"), src.get("KUBE_PVC_SIZE")) {
            (Some(raw), _) => src.size("DEFAULT_SHIP_DISK", raw)?,
            (None, Some(raw)) => src.size("KUBE_PVC_SIZE", raw)?,
            (None, None) => 1 << 30,
        }
        .max(crate::model::MIN_DISK_BYTES);

        let max_ttl = src.int_in("MAX_TTL", 2_592_000, 1, 10 * 365 * 86_400)?;
        let ready_poll_ms = match (
            src.get("SHIP_READY_POLL_MS"),
            src.get("SHIP_HEALTH_CHECK_INTERVAL"),
        ) {
            (Some(_), _) | (None, None) => src.int_in("SHIP_READY_POLL_MS", 200, 1, 60_000)?,
            (None, Some(_)) => src.int_in("SHIP_HEALTH_CHECK_INTERVAL", 2, 1, 60)? * 1000,
        };

        let cors_allow_origins = match src.get("CORS_ALLOW_ORIGINS").map(str::trim) {
            None => CorsOrigins::Any,
            Some("") => CorsOrigins::Disabled,
            Some("*") => CorsOrigins::Any,
            Some(list) => CorsOrigins::List(
                list.split(',')
                    .map(|o| o.trim().trim_end_matches('/').to_owned())
                    .filter(|o| !o.is_empty())
                    .collect(),
            ),
        };
        let cors_allow_credentials = src.boolean("CORS_ALLOW_CREDENTIALS", false)?;
        if cors_allow_credentials && cors_allow_origins == CorsOrigins::Any {
            return Err(invalid(
                "CORS_ALLOW_CREDENTIALS",
                src.get("CORS_ALLOW_CREDENTIALS").unwrap_or_default(),
                "credentials cannot be allowed for every origin: list the origins in CORS_ALLOW_ORIGINS instead of *",
            ));
        }

        let data_dir = src.optional_string("SHIP_DATA_DIR").map(expand_home);
        let data_host_dir = src
            .optional_string("SHIP_DATA_HOST_DIR")
            .map(expand_home)
            .or_else(|| data_dir.clone());

        let max_upload_size = src.seconds("MAX_UPLOAD_SIZE", 104_857_600, 1)?;
        let max_ship_num: u32 = src.parse(
            "MAX_SHIP_NUM",
            10,
            "expected an integer ≥ 0 (0 = unlimited)",
        )?;
        let warm_pool_size: u32 = src.parse(
            "WARM_POOL_SIZE",
            0,
            "expected an integer ≥ 0 (0 = no warm pool)",
        )?;
        if max_ship_num > 0 && warm_pool_size > max_ship_num {
            return Err(invalid(
                "WARM_POOL_SIZE",
                src.get("WARM_POOL_SIZE").unwrap_or_default(),
                &format!("the warm pool cannot exceed MAX_SHIP_NUM ({max_ship_num})"),
            ));
        }
        Ok(Self {
            host: src.string("HOST", "0.0.0.0"),
            port: src.parse("PORT", 8156, "expected an integer from 0 to 65535")?,
            debug,
            log_level,
            log_format: src.choice(
                "LOG_FORMAT",
                LogFormat::Text,
                &[("text", LogFormat::Text), ("json", LogFormat::Json)],
            )?,
            access_token,
            database_url,
            database_path,
            container_driver,
            max_ship_num,
            warm_pool_size,
            behavior_after_max_ship: src.choice(
                "BEHAVIOR_AFTER_MAX_SHIP",
                MaxShipBehavior::Wait,
                &[
                    ("reject", MaxShipBehavior::Reject),
                    ("wait", MaxShipBehavior::Wait),
                ],
            )?,
            max_ship_wait: Duration::from_secs(src.seconds("MAX_SHIP_WAIT_SECONDS", 300, 0)?),
            docker_image: src
                .optional_string("DOCKER_IMAGE")
                .unwrap_or_else(|| "ship:latest".to_owned()),
            docker_network: match src.get("DOCKER_NETWORK") {
                None => Some("shipyard".to_owned()),
                Some(v) => Some(v.trim().to_owned()).filter(|v| !v.is_empty()),
            },
            ship_container_port: src.parse(
                "SHIP_CONTAINER_PORT",
                8123,
                "expected an integer from 0 to 65535",
            )?,
            ship_data_dir: data_dir,
            ship_data_host_dir: data_host_dir,
            default_ship_ttl: src.int_in("DEFAULT_SHIP_TTL", 3600.min(max_ttl), 1, max_ttl)?,
            default_ship_cpus,
            default_ship_memory,
            default_ship_disk,
            max_ttl,
            max_request_body: src.seconds("MAX_REQUEST_BODY", 16_777_216, 1)?,
            max_upload_size,
            ship_health_check_timeout: Duration::from_secs(src.seconds(
                "SHIP_HEALTH_CHECK_TIMEOUT",
                60,
                1,
            )?),
            ship_ready_poll: Duration::from_millis(u64::try_from(ready_poll_ms).unwrap_or(200)),
            status_check_interval: Duration::from_secs(src.seconds(
                "STATUS_CHECK_INTERVAL",
                60,
                1,
            )?),
            ship_exec_timeout: src.seconds("SHIP_EXEC_TIMEOUT", 30, 1)?,
            ship_exec_timeout_grace: src.seconds("SHIP_EXEC_TIMEOUT_GRACE", 10, 0)?,
            ship_exec_max_timeout: src.seconds("SHIP_EXEC_MAX_TIMEOUT", 3600, 1)?,
            ship_transfer_timeout: Duration::from_secs(src.seconds(
                "SHIP_TRANSFER_TIMEOUT",
                120,
                1,
            )?),
            cors_allow_origins,
            cors_allow_credentials,
            ws_reject_mode: src.choice(
                "WS_REJECT_MODE",
                WsRejectMode::Auto,
                &[
                    ("auto", WsRejectMode::Auto),
                    ("close", WsRejectMode::Close),
                    ("handshake", WsRejectMode::Handshake),
                ],
            )?,
            kube_namespace: src.optional_string("KUBE_NAMESPACE"),
            kube_config_path: src.optional_string("KUBE_CONFIG_PATH"),
            kube_image_pull_policy: src
                .optional_string("KUBE_IMAGE_PULL_POLICY")
                .unwrap_or_else(|| "IfNotPresent".to_owned()),
            kube_storage_class: src.optional_string("KUBE_STORAGE_CLASS"),
            podman_socket: src.optional_string("PODMAN_SOCKET"),
            podman_api: src.choice(
                "PODMAN_API",
                PodmanApi::Auto,
                &[
                    ("auto", PodmanApi::Auto),
                    ("libpod", PodmanApi::Libpod),
                    ("compat", PodmanApi::Compat),
                ],
            )?,
            xdg_runtime_dir: src.optional_string("XDG_RUNTIME_DIR").map(PathBuf::from),
            warnings,
        })
    }

    /// The ship limit as an option (`None` = unlimited).
    pub fn ship_limit(&self) -> Option<usize> {
        (self.max_ship_num > 0).then(|| usize::try_from(self.max_ship_num).unwrap_or(usize::MAX))
    }
}

fn expand_home(p: String) -> PathBuf {
    if (p == "~" || p.starts_with("~/"))
        && let Some(home) = std::env::var_os("HOME")
    {
        return PathBuf::from(home).join(p.trim_start_matches('~').trim_start_matches('/'));
    }
    PathBuf::from(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_contract() {
        let c = Config::from_pairs::<&str, &str>([]).unwrap();
        assert_eq!(c.host, "0.0.0.0");
        assert_eq!(c.port, 8156);
        assert_eq!(c.container_driver, DriverKind::DockerHost);
        assert_eq!(c.max_ship_num, 10);
        assert_eq!(c.behavior_after_max_ship, MaxShipBehavior::Wait);
        assert_eq!(c.docker_network.as_deref(), Some("shipyard"));
        assert_eq!(c.default_ship_cpus, Some(1.0));
        assert_eq!(c.default_ship_memory, Some(512 << 20));
        assert_eq!(c.default_ship_disk, 1 << 30);
        assert_eq!(c.ship_ready_poll, Duration::from_millis(200));
        assert_eq!(c.database_path, PathBuf::from("./bay.db"));
        assert!(c.warnings.iter().any(|w| w.contains("secret-token")));
        assert_eq!(c.podman_api, PodmanApi::Auto);
    }

    #[test]
    fn the_podman_api_can_be_forced() {
        for (raw, api) in [
            ("libpod", PodmanApi::Libpod),
            ("COMPAT", PodmanApi::Compat),
            ("auto", PodmanApi::Auto),
        ] {
            let c = Config::from_pairs([("PODMAN_API", raw)]).unwrap();
            assert_eq!(c.podman_api, api);
            assert_eq!(c.podman_api.as_str(), raw.to_ascii_lowercase());
        }
    }

    #[test]
    fn invalid_values_name_variable_and_value() {
        let cases = [
            ("MAX_SHIP_NUM", "-1"),
            ("BEHAVIOR_AFTER_MAX_SHIP", "queue"),
            ("DEFAULT_SHIP_MEMORY", "lots"),
            ("DEBUG", "maybe"),
            ("DATABASE_URL", "postgres://db/bay"),
            ("SHIP_READY_POLL_MS", "0"),
            ("LOG_FORMAT", "xml"),
            ("PODMAN_API", "docker"),
        ];
        for (var, value) in cases {
            let err = Config::from_pairs([(var, value)]).unwrap_err().to_string();
            assert!(err.contains(var) && err.contains(value), "{err}");
        }
    }

    #[test]
    fn the_warm_pool_is_off_by_default_and_bounded_by_the_limit() {
        assert_eq!(
            Config::from_pairs::<&str, &str>([]).unwrap().warm_pool_size,
            0
        );
        let c = Config::from_pairs([("MAX_SHIP_NUM", "4"), ("WARM_POOL_SIZE", "4")]).unwrap();
        assert_eq!(c.warm_pool_size, 4);
        let c = Config::from_pairs([("MAX_SHIP_NUM", "0"), ("WARM_POOL_SIZE", "40")]).unwrap();
        assert_eq!(c.warm_pool_size, 40);
        let err = Config::from_pairs([("MAX_SHIP_NUM", "3"), ("WARM_POOL_SIZE", "5")])
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "invalid WARM_POOL_SIZE \"5\": the warm pool cannot exceed MAX_SHIP_NUM (3)"
        );
        let err = Config::from_pairs([("WARM_POOL_SIZE", "-2")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("WARM_POOL_SIZE") && err.contains("-2"),
            "{err}"
        );
    }

    #[test]
    fn containerd_is_refused_with_the_reference_message() {
        let err = Config::from_pairs([("CONTAINER_DRIVER", "containerd")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("containerd driver is not yet implemented. Please use one of: docker, docker-host, kubernetes, podman, podman-host"));
    }

    #[test]
    fn enumerations_are_case_insensitive_and_disables_work() {
        let c = Config::from_pairs([
            ("behavior_after_max_ship", "REJECT"),
            ("DEFAULT_SHIP_CPUS", "0"),
            ("DEFAULT_SHIP_MEMORY", ""),
            ("DOCKER_NETWORK", ""),
            ("KUBE_PVC_SIZE", "5Gi"),
            ("SHIP_HEALTH_CHECK_INTERVAL", "3"),
            ("CORS_ALLOW_ORIGINS", "http://a.example, http://b.example/"),
            ("CORS_ALLOW_CREDENTIALS", "yes"),
        ])
        .unwrap();
        assert_eq!(c.behavior_after_max_ship, MaxShipBehavior::Reject);
        assert_eq!(c.default_ship_cpus, None);
        assert_eq!(c.default_ship_memory, None);
        assert_eq!(c.docker_network, None);
        assert_eq!(c.default_ship_disk, 5 << 30);
        assert_eq!(c.ship_ready_poll, Duration::from_secs(3));
        assert_eq!(
            c.cors_allow_origins,
            CorsOrigins::List(vec!["http://a.example".into(), "http://b.example".into()])
        );
    }

    #[test]
    fn credentials_with_any_origin_fail() {
        assert!(Config::from_pairs([("CORS_ALLOW_CREDENTIALS", "true")]).is_err());
    }

    #[test]
    fn dotenv_is_read_and_unknown_keys_warn() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".env");
        std::fs::write(
            &path,
            "# comment\nexport max_ttl=\"1234\"\nNOT_A_BAY_KEY=1\nSHIP_EXEC_TIMEOUT=45 # inline\n",
        )
        .unwrap();
        let c = Config::from_env_and_dotenv(&path).unwrap();
        assert_eq!(c.max_ttl, 1234);
        assert_eq!(c.ship_exec_timeout, 45);
        assert!(c.warnings.iter().any(|w| w.contains("NOT_A_BAY_KEY")));
    }
}
