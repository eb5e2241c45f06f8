//! Agent configuration, read once from the environment at start-up.

use std::path::PathBuf;

/// Everything the agent reads from its environment.
#[derive(Debug, Clone)]
pub struct Config {
    pub port: u16,
    pub auth_token: Option<String>,
    pub max_output_bytes: usize,
    pub python: String,
    /// Parent of the session homes (`/home`; tests: `SHIP_HOME_ROOT`).
    pub home_root: PathBuf,
    /// Mapping files (`/app/metadata`; tests: `SHIP_METADATA_DIR`).
    pub metadata_dir: PathBuf,
    /// User database files (tests: `SHIP_PASSWD_FILE`, `SHIP_GROUP_FILE`, `SHIP_SHADOW_FILE`).
    pub passwd_file: PathBuf,
    pub group_file: PathBuf,
    pub shadow_file: PathBuf,
    /// Skills listed by `/meta` (`/app/skills`; tests: `SHIP_SKILLS_DIR`).
    pub skills_dir: PathBuf,
    pub image: Option<String>,
    pub image_digest: Option<String>,
    pub git_sha: Option<String>,
    /// Login shell for session users: bash when present, else sh.
    pub shell: String,
    /// Lowest session uid (10000; tests: `SHIP_FIRST_UID`, so that agents running side by
    /// side on one host never share a uid: a uid is the unit processes are killed by).
    pub first_uid: u32,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn path_var(name: &str, default: &str) -> PathBuf {
    PathBuf::from(var(name).unwrap_or_else(|| default.to_owned()))
}

impl Config {
    /// Reads the configuration from the environment.
    pub fn from_env() -> anyhow::Result<Self> {
        let port = match var("SHIP_PORT").or_else(|| var("PORT")) {
            Some(p) => p
                .trim()
                .parse()
                .map_err(|_| anyhow::anyhow!("invalid port {p:?} in SHIP_PORT/PORT"))?,
            None => 8123,
        };
        let max_output_bytes = match var("SHIP_MAX_OUTPUT_BYTES") {
            Some(v) => v.trim().parse().map_err(|_| {
                anyhow::anyhow!("invalid SHIP_MAX_OUTPUT_BYTES {v:?}: expected a byte count")
            })?,
            None => 1 << 20,
        };
        let shell = ["/bin/bash", "/usr/bin/bash"]
            .iter()
            .find(|p| std::path::Path::new(p).exists())
            .map_or_else(|| "/bin/sh".to_owned(), |p| (*p).to_owned());
        let first_uid = match var("SHIP_FIRST_UID") {
            Some(v) => v
                .trim()
                .parse()
                .map_err(|_| anyhow::anyhow!("invalid SHIP_FIRST_UID {v:?}: expected a uid"))?,
            None => 10_000,
        };
        Ok(Self {
            first_uid,
            port,
            auth_token: var("SHIP_AUTH_TOKEN"),
            max_output_bytes: max_output_bytes.max(2),
            python: var("SHIP_PYTHON").unwrap_or_else(|| "python3".to_owned()),
            home_root: path_var("SHIP_HOME_ROOT", "/home"),
            metadata_dir: path_var("SHIP_METADATA_DIR", "/app/metadata"),
            passwd_file: path_var("SHIP_PASSWD_FILE", "/etc/passwd"),
            group_file: path_var("SHIP_GROUP_FILE", "/etc/group"),
            shadow_file: path_var("SHIP_SHADOW_FILE", "/etc/shadow"),
            skills_dir: path_var("SHIP_SKILLS_DIR", "/app/skills"),
            image: var("SHIP_IMAGE"),
            image_digest: var("SHIP_IMAGE_DIGEST"),
            git_sha: var("GIT_SHA"),
            shell,
        })
    }

    /// Whether `bash` is available (else `sh` is used for shells and terminals).
    pub fn has_bash(&self) -> bool {
        self.shell.ends_with("bash")
    }
}
