//! The command line: every command and option of `bay` (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const AFTER_HELP: &str = "\
Modes:
  remote  when --url or BAY_URL is set: a client of bay-server (token: --token or BAY_TOKEN)
  local   otherwise, or with --local: bay-core and the CONTAINER_DRIVER driver in-process, on the
          database and configuration (.env, environment) a bay-server here would use; refused
          while a bay-server holds that database (use --url then)

Session: --session, BAY_SESSION, or a per-user default (`bay-cli-<user>@<host>`).

Exit codes:
  0  success (bay exec: the command's own exit code)
  1  server, engine or connection error
  2  usage error (bad arguments, rejected request fields)
  3  not found (ship, session, file)
  4  refused or limited (no access, no free slot, ship limit, being created, conflict)";

/// `bay`: create and use Bay sandboxes (ships) from the command line.
#[derive(Debug, Parser)]
#[command(name = "bay", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct Global {
    /// bay-server URL (remote mode), e.g. http://127.0.0.1:8156
    #[arg(long, env = "BAY_URL", global = true)]
    pub url: Option<String>,
    /// Access token for remote mode
    #[arg(long, env = "BAY_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// Use bay-core in-process even when BAY_URL is set
    #[arg(long, global = true)]
    pub local: bool,
    /// Session id (default: a stable per-user id)
    #[arg(long, env = "BAY_SESSION", global = true)]
    pub session: Option<String>,
    /// Output format
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// aligned tables and plain text for people
    Table,
    /// the API's JSON bodies, for scripts
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage ships
    #[command(subcommand)]
    Ship(ShipCommand),
    /// Run a shell command in a ship; its exit code becomes bay's
    Exec(ExecArgs),
    /// Run Python code in the session's interpreter of a ship
    Python(PythonArgs),
    /// Copy a file to or from a ship (LOCAL SHIP:PATH, or SHIP:PATH LOCAL)
    Cp(CpArgs),
    /// Files in a ship's workspace
    #[command(subcommand)]
    Fs(FsCommand),
    /// Open an interactive terminal in a ship
    Term(TermArgs),
    /// Sessions (relations between a session id and a ship)
    #[command(subcommand)]
    Session(SessionCommand),
    /// Ship and session counts of this Bay
    Stat,
    /// Print a shell completion script
    Completions {
        /// the shell
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum ShipCommand {
    /// Create a ship for the session (or reuse, join or restore one)
    Create(CreateArgs),
    /// List every ship
    #[command(alias = "ls")]
    List,
    /// Show one ship
    Get {
        /// ship id
        ship: String,
    },
    /// Stop a ship (data kept), or with --permanent remove it and its data
    #[command(alias = "rm")]
    Delete {
        /// ship id
        ship: String,
        /// remove the ship and its data for good
        #[arg(long)]
        permanent: bool,
    },
    /// Start a stopped ship (or join a running one) for the session
    Start {
        /// ship id
        ship: String,
        /// seconds (server default: DEFAULT_SHIP_TTL)
        #[arg(long, value_parser = clap::value_parser!(i64).range(1..))]
        ttl: Option<i64>,
    },
    /// Add seconds to a running ship's lifetime
    ExtendTtl {
        /// ship id
        ship: String,
        /// seconds to add
        #[arg(value_parser = clap::value_parser!(i64).range(1..))]
        ttl: i64,
    },
    /// Print a ship's container logs
    Logs {
        /// ship id
        ship: String,
        /// number of most recent lines
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        tail: u32,
    },
    /// List the sessions of a ship
    Sessions {
        /// ship id
        ship: String,
    },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// lifetime in seconds
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(i64).range(1..))]
    pub ttl: i64,
    /// CPUs (e.g. 0.5)
    #[arg(long)]
    pub cpus: Option<f64>,
    /// memory (e.g. 512m, 1Gi)
    #[arg(long)]
    pub memory: Option<String>,
    /// disk (e.g. 1Gi)
    #[arg(long)]
    pub disk: Option<String>,
    /// sessions that may use the ship at once
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=100))]
    pub max_sessions: Option<i32>,
    /// always make a new ship (no reuse, join or restore)
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// ship id
    pub ship: String,
    /// seconds before the command is killed
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: Option<u64>,
    /// working directory (inside the workspace)
    #[arg(long)]
    pub cwd: Option<String>,
    /// NAME=VALUE added to the environment (repeatable)
    #[arg(long = "env", short = 'e', value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// the command (run by bash; quote it or put it after --)
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("invalid --env {s:?}: expected NAME=VALUE"))
}

#[derive(Debug, Args)]
pub struct PythonArgs {
    /// ship id
    pub ship: String,
    /// the code (otherwise FILE, or standard input)
    #[arg(short = 'c', conflicts_with = "file")]
    pub code: Option<String>,
    /// a file with the code ('-' = standard input)
    pub file: Option<PathBuf>,
    /// seconds before the cell is interrupted
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: Option<u64>,
    /// write the figures (PNG) to this directory
    #[arg(long)]
    pub save_figures: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CpArgs {
    /// LOCAL or SHIP:PATH
    pub from: String,
    /// SHIP:PATH or LOCAL
    pub to: String,
}

#[derive(Debug, Args)]
pub struct TermArgs {
    /// ship id
    pub ship: String,
}

#[derive(Debug, Subcommand)]
pub enum FsCommand {
    /// List a directory
    Ls {
        /// ship id
        ship: String,
        /// directory (default: the workspace)
        #[arg(default_value = ".")]
        path: String,
        /// include names starting with '.'
        #[arg(long, short = 'a')]
        all: bool,
    },
    /// Print a text file
    Cat {
        /// ship id
        ship: String,
        /// file
        path: String,
    },
    /// Write a text file (CONTENT, or standard input)
    Write {
        /// ship id
        ship: String,
        /// file
        path: String,
        /// the text (default: standard input)
        content: Option<String>,
    },
    /// Delete a file or directory
    Rm {
        /// ship id
        ship: String,
        /// file or directory
        path: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// List every session relation
    #[command(alias = "ls")]
    List,
    /// Show a session (default: this session)
    Get {
        /// session id (default: this session)
        id: Option<String>,
        /// the relation with this ship
        #[arg(long)]
        ship: Option<String>,
    },
    /// Set a session's expiry to now + TTL seconds
    ExtendTtl {
        /// seconds
        #[arg(value_parser = clap::value_parser!(i64).range(1..))]
        ttl: i64,
        /// session id (default: this session)
        #[arg(long)]
        id: Option<String>,
        /// only the relation with this ship
        #[arg(long)]
        ship: Option<String>,
    },
    /// Delete a session's relations (ships left without sessions stop)
    #[command(alias = "rm")]
    Delete {
        /// session id (default: this session)
        id: Option<String>,
        /// only the relation with this ship
        #[arg(long)]
        ship: Option<String>,
    },
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
