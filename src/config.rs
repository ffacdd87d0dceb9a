//! The one configuration struct, loaded once in `main` and passed down.
//!
//! Sources, weakest first: built-in defaults, the TOML file, environment
//! variables `INGESTD_<SECTION>__<KEY>` (and `DATABASE_URL`), command-line
//! flags. Every key is documented in `config/ingestd.toml`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Errors that stop start-up; each renders as one line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("config key {key}: {message}")]
    Invalid { key: &'static str, message: String },
    #[error("folder {key} = {path}: {message}")]
    Folder { key: String, path: PathBuf, message: String },
    #[error("{0}")]
    Pipeline(#[from] crate::core::pipeline::DeclarationError),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub database: DatabaseConfig,
    pub paths: PathsConfig,
    pub pipelines: PipelinesConfig,
    pub pipeline: PipelineConfig,
    pub generator: GeneratorConfig,
    pub shutdown: ShutdownConfig,
    pub http: HttpConfig,
    pub log: LogConfig,
    pub supervisor: SupervisorConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// Unset: the embedded cluster under `paths.pg_data`.
    pub url: Option<String>,
    pub pool_size: u32,
    /// How long start-up keeps retrying an unreachable database before it
    /// exits non-zero.
    pub startup_timeout_secs: u64,
    /// Upper bound on one batch transaction, enforced by the daemon itself:
    /// TCP keepalive never fires for a frozen backend on loopback.
    pub batch_timeout_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PathsConfig {
    pub incoming: PathBuf,
    pub processed: PathBuf,
    pub bad_records: PathBuf,
    /// Where the embedded PostgreSQL cluster lives when no URL is set.
    pub pg_data: PathBuf,
}

pub use crate::core::pipeline::AfterCommit;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    pub batch_rows: usize,
    /// A batch also ends once its records hold this many bytes.
    pub batch_bytes: usize,
    pub mailbox_capacity: usize,
    /// The credit window: batches parsed but not yet committed.
    pub batches_in_flight: usize,
    /// Writer connections committing batches of different files side by
    /// side (a file's own batches always commit one after another).
    pub writers: usize,
    pub max_record_bytes: usize,
    pub stable_for_ms: u64,
    pub rescan_interval_ms: u64,
    pub after_commit: AfterCommit,
    /// Failures (panics) on one file before it is parked as `failed`.
    pub max_file_attempts: u32,
}

/// Which pipelines run (`spec/pipelines.md`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelinesConfig {
    /// Pipeline declaration files, relative to the working directory.
    /// Empty: the built-in pipeline (the `events.md` contract) with the
    /// `paths.*` folders.
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeneratorConfig {
    pub enabled: bool,
    /// 0 = endless.
    pub files: u64,
    pub rows: u64,
    pub interval_ms: u64,
    pub bad_frac: f64,
    pub dup_frac: f64,
    pub seed: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    pub drain_timeout_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Empty string disables the HTTP endpoint.
    pub listen: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing `EnvFilter` directive; `RUST_LOG` wins when set.
    pub level: String,
    /// A progress line per pipeline this often while running; 0 = none.
    pub progress_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisorConfig {
    pub max_restarts: u32,
    pub restart_window_secs: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig { url: None, pool_size: 4, startup_timeout_secs: 30, batch_timeout_secs: 60 }
    }
}

impl Default for PathsConfig {
    fn default() -> Self {
        PathsConfig {
            incoming: "data/incoming".into(),
            processed: "data/processed".into(),
            bad_records: "data/bad_records".into(),
            pg_data: "data/pg".into(),
        }
    }
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            batch_rows: 10_000,
            batch_bytes: 8 << 20,
            mailbox_capacity: 4,
            batches_in_flight: 4,
            writers: 2,
            max_record_bytes: 1 << 20,
            stable_for_ms: 500,
            rescan_interval_ms: 5_000,
            after_commit: AfterCommit::Move,
            max_file_attempts: 3,
        }
    }
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            enabled: false,
            files: 0,
            rows: 1_000,
            interval_ms: 1_000,
            bad_frac: 0.05,
            dup_frac: 0.05,
            seed: None,
        }
    }
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig { drain_timeout_secs: 30 }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig { listen: "127.0.0.1:9187".into() }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info,tokio_postgres=warn,actix_server=warn".into(),
            progress_secs: 5,
        }
    }
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig { max_restarts: 5, restart_window_secs: 60 }
    }
}

/// Keys whose default is unset, so their type cannot be read off the
/// defaults when an environment variable sets them.
const OPTIONAL_STRING_KEYS: &[(&str, &str)] = &[("database", "url")];
const OPTIONAL_INT_KEYS: &[(&str, &str)] = &[("generator", "seed")];

impl Config {
    /// Loads the file (if it exists, or if it was named explicitly), then
    /// applies the environment. `explicit` = the path came from `--config`.
    pub fn load(path: &Path, explicit: bool) -> Result<Config, ConfigError> {
        let vars: BTreeMap<String, String> = std::env::vars().collect();
        Self::load_with_env(path, explicit, &vars)
    }

    pub fn load_with_env(path: &Path, explicit: bool, env: &BTreeMap<String, String>) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => String::new(),
            Err(source) => return Err(ConfigError::Read { path: path.to_owned(), source }),
        };
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError::Parse {
            path: path.to_owned(),
            message: one_line(&e.to_string()),
        })?;
        // Deserialize once before the environment is applied, so an error
        // in the file is blamed on the file.
        Config::deserialize(toml::Value::Table(table.clone()))
            .map_err(|e| ConfigError::Parse { path: path.to_owned(), message: one_line(&e.to_string()) })?;
        apply_env(&mut table, env)?;
        let config = Config::deserialize(toml::Value::Table(table))
            .map_err(|e| ConfigError::Env { var: "INGESTD_*".into(), message: one_line(&e.to_string()) })?;
        config.check()?;
        Ok(config)
    }

    /// Checks the values that serde cannot: ranges and relations.
    pub fn check(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| Err(ConfigError::Invalid { key, message: message.into() });
        if self.pipeline.batch_rows == 0 {
            return invalid("pipeline.batch_rows", "must be at least 1");
        }
        if self.pipeline.mailbox_capacity == 0 {
            return invalid("pipeline.mailbox_capacity", "must be at least 1 (0 would mean unbounded)");
        }
        if self.pipeline.batches_in_flight == 0 {
            return invalid("pipeline.batches_in_flight", "must be at least 1");
        }
        if !(1..=16).contains(&self.pipeline.writers) {
            return invalid("pipeline.writers", "must be between 1 and 16");
        }
        // Both bounded so a batch's offsets fit in 32 bits (core::record).
        if !(64..=(256 << 20)).contains(&self.pipeline.max_record_bytes) {
            return invalid("pipeline.max_record_bytes", "must be between 64 and 268435456");
        }
        if !(1024..=(1 << 30)).contains(&self.pipeline.batch_bytes) {
            return invalid("pipeline.batch_bytes", "must be between 1024 and 1073741824");
        }
        if self.database.pool_size < 2 {
            return invalid("database.pool_size", "must be at least 2 (writer + bookkeeping)");
        }
        if self.database.batch_timeout_secs == 0 {
            return invalid("database.batch_timeout_secs", "must be at least 1");
        }
        if self.pipeline.max_file_attempts == 0 {
            return invalid("pipeline.max_file_attempts", "must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.generator.bad_frac) {
            return invalid("generator.bad_frac", "must be between 0 and 1");
        }
        if !(0.0..=1.0).contains(&self.generator.dup_frac) {
            return invalid("generator.dup_frac", "must be between 0 and 1");
        }
        if let Some(url) = &self.database.url {
            if url.parse::<tokio_postgres::Config>().is_err() {
                // The parse error may quote the URL, password included: don't.
                return invalid("database.url", "not a valid PostgreSQL URL or key=value string");
            }
        }
        if !self.http.listen.is_empty() && self.http.listen.parse::<std::net::SocketAddr>().is_err() {
            return invalid("http.listen", "must be host:port (an IP address), or empty to disable");
        }
        let folders = [
            ("paths.incoming", &self.paths.incoming),
            ("paths.processed", &self.paths.processed),
            ("paths.bad_records", &self.paths.bad_records),
        ];
        for (i, (ka, a)) in folders.iter().enumerate() {
            for (kb, b) in &folders[i + 1..] {
                if same_path(a, b) {
                    return Err(ConfigError::Folder {
                        key: ka.to_string(),
                        path: a.to_path_buf(),
                        message: format!("must differ from {kb}"),
                    });
                }
            }
        }
        Ok(())
    }

    /// Creates the folders if missing and checks they are writable
    /// directories. Separate from `check` because it touches the disk.
    pub fn prepare_folders(&self) -> Result<(), ConfigError> {
        prepare_folder("paths.incoming", &self.paths.incoming, false)?;
        prepare_folder("paths.processed", &self.paths.processed, true)?;
        prepare_folder("paths.bad_records", &self.paths.bad_records, true)
    }
}

/// Checks that a folder is a readable, writable directory, creating it
/// first if `create`. The incoming folder must exist (a typo there would
/// otherwise watch an empty new folder forever); output folders are
/// created.
pub fn prepare_folder(key: &str, path: &Path, create: bool) -> Result<(), ConfigError> {
    let folder_err = |message: String| ConfigError::Folder { key: key.to_owned(), path: path.to_owned(), message };
    if create {
        std::fs::create_dir_all(path).map_err(|e| folder_err(format!("cannot create: {e}")))?;
    }
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => folder_err("does not exist".into()),
        _ => folder_err(e.to_string()),
    })?;
    if !meta.is_dir() {
        return Err(folder_err("not a directory".into()));
    }
    std::fs::read_dir(path).map_err(|e| folder_err(format!("not readable: {e}")))?;
    let probe = path.join(format!(".ingestd-write-probe-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|e| folder_err(format!("not writable: {e}")))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

pub(crate) fn same_path(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a.components().eq(b.components()),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Applies `INGESTD_<SECTION>__<KEY>` and `DATABASE_URL` to the table. The
/// type of each value is taken from the defaults, so `INGESTD_HTTP__LISTEN`
/// stays a string and `INGESTD_PIPELINE__BATCH_ROWS` becomes an integer.
fn apply_env(table: &mut toml::Table, env: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    let defaults = toml::Value::try_from(Config::default()).expect("defaults serialize");
    let mut set = |section: &str, key: &str, var: &str, raw: &str| -> Result<(), ConfigError> {
        let env_err = |message: String| ConfigError::Env { var: var.to_owned(), message };
        let default = defaults.get(section).and_then(|s| s.get(key));
        let known_section = defaults.get(section).is_some();
        let value = match default {
            Some(toml::Value::String(_)) => toml::Value::String(raw.to_owned()),
            Some(toml::Value::Integer(_)) => toml::Value::Integer(
                raw.trim().parse().map_err(|_| env_err(format!("expected an integer, got {raw:?}")))?,
            ),
            Some(toml::Value::Float(_)) => {
                toml::Value::Float(raw.trim().parse().map_err(|_| env_err(format!("expected a number, got {raw:?}")))?)
            }
            Some(toml::Value::Boolean(_)) => toml::Value::Boolean(
                raw.trim().parse().map_err(|_| env_err(format!("expected true or false, got {raw:?}")))?,
            ),
            // A list: comma-separated (`INGESTD_PIPELINES__FILES=a.toml,b.toml`).
            Some(toml::Value::Array(_)) => toml::Value::Array(
                raw.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| toml::Value::String(s.to_owned()))
                    .collect(),
            ),
            Some(_) => return Err(env_err("this key cannot be set from the environment".into())),
            None if OPTIONAL_STRING_KEYS.contains(&(section, key)) => toml::Value::String(raw.to_owned()),
            None if OPTIONAL_INT_KEYS.contains(&(section, key)) => toml::Value::Integer(
                raw.trim().parse().map_err(|_| env_err(format!("expected an integer, got {raw:?}")))?,
            ),
            None if !known_section => return Err(env_err(format!("unknown config section {section:?}"))),
            None => return Err(env_err(format!("unknown config key {section}.{key}"))),
        };
        let section_table = table.entry(section.to_owned()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match section_table {
            toml::Value::Table(t) => {
                t.insert(key.to_owned(), value);
                Ok(())
            }
            _ => Err(env_err(format!("config section {section} is not a table"))),
        }
    };
    if let Some(url) = env.get("DATABASE_URL") {
        if !url.is_empty() {
            set("database", "url", "DATABASE_URL", url)?;
        }
    }
    for (var, raw) in env {
        let Some(rest) = var.strip_prefix("INGESTD_") else { continue };
        let Some((section, key)) = rest.split_once("__") else {
            // Not a config key (e.g. INGESTD_FAILPOINTS).
            continue;
        };
        set(&section.to_ascii_lowercase(), &key.to_ascii_lowercase(), var, raw)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml_text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, toml_text).unwrap();
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::load_with_env(&path, true, &env)
    }

    #[test]
    fn defaults_match_the_interface() {
        let c = load("", &[]).unwrap();
        assert_eq!(c.database.url, None);
        assert_eq!(c.database.pool_size, 4);
        assert_eq!(c.paths.incoming, PathBuf::from("data/incoming"));
        assert_eq!(c.pipeline.batch_rows, 10_000);
        assert_eq!(c.pipeline.max_record_bytes, 1_048_576);
        assert_eq!(c.pipeline.after_commit, AfterCommit::Move);
        assert!(!c.generator.enabled);
        assert_eq!(c.shutdown.drain_timeout_secs, 30);
        assert_eq!(c.http.listen, "127.0.0.1:9187");
        assert_eq!(c.log.format, LogFormat::Text);
        assert_eq!(c.log.progress_secs, 5);
    }

    #[test]
    fn environment_beats_file() {
        let c = load(
            "[pipeline]\nbatch_rows = 7\n",
            &[
                ("INGESTD_PIPELINE__BATCH_ROWS", "5000"),
                ("INGESTD_LOG__FORMAT", "json"),
                ("DATABASE_URL", "postgres://u@localhost/db"),
                ("INGESTD_GENERATOR__SEED", "42"),
                ("INGESTD_FAILPOINTS", "ignored"),
                ("INGESTD_PIPELINES__FILES", "a.toml, b.toml,"),
            ],
        )
        .unwrap();
        assert_eq!(c.pipelines.files, [PathBuf::from("a.toml"), PathBuf::from("b.toml")]);
        assert_eq!(c.pipeline.batch_rows, 5000);
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.database.url.as_deref(), Some("postgres://u@localhost/db"));
        assert_eq!(c.generator.seed, Some(42));
    }

    #[test]
    fn bad_settings_are_one_line_errors() {
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case] = &[
            ("[pipeline]\nbatch_row = 1\n", &[], "unknown field `batch_row`"),
            ("[pipeline]\nbatch_rows = \"x\"\n", &[], "invalid type"),
            ("[pipelin]\n", &[], "unknown field `pipelin`"),
            ("", &[("INGESTD_PIPELINE__BATCH_ROWS", "ten")], "expected an integer"),
            ("", &[("INGESTD_PIPELINE__NOPE", "1")], "unknown config key pipeline.nope"),
            ("[pipeline]\nbatch_rows = 0\n", &[], "pipeline.batch_rows"),
            ("[pipeline]\nafter_commit = \"copy\"\n", &[], "unknown variant `copy`"),
            ("[paths]\nprocessed = \"data/incoming\"\n", &[], "must differ from paths.processed"),
            ("[database]\nurl = \"postgres://u:secret@h:notaport/db\"\n", &[], "database.url"),
            ("[http]\nlisten = \"localhost\"\n", &[], "http.listen"),
        ];
        for (text, env, want) in cases {
            let err = load(text, env).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
            assert!(!err.contains('\n'), "multi-line error: {err}");
            assert!(!err.contains("secret"), "password leaked: {err}");
        }
    }
}
