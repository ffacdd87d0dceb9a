//! Which pipelines a daemon runs, and with what: their declarations loaded
//! from `pipelines.files` and `--pipeline` (or the built-in one), each with
//! its folders and settings resolved against the main config, checked
//! together (no two on one folder, table or name).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{same_path, Config, ConfigError};
use crate::core::pipeline::{self, AfterCommit, DeclarationError, Pipeline};

/// One pipeline as it runs: its declaration and what the config adds.
#[derive(Debug, Clone)]
pub struct Planned {
    pub pipeline: Arc<Pipeline>,
    pub incoming: PathBuf,
    pub processed: PathBuf,
    pub bad_records: PathBuf,
    pub after_commit: AfterCommit,
    pub stable_for_ms: u64,
    pub batch_rows: usize,
}

impl Planned {
    /// Whether this is the built-in pipeline (run with no files declared).
    pub fn is_builtin(&self) -> bool {
        self.pipeline.source == pipeline::BUILTIN_SOURCE
    }
}

/// Reads a declaration file.
pub fn load_file(path: &Path) -> Result<Pipeline, DeclarationError> {
    let source = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| DeclarationError {
        file: source.clone(),
        key: "(file)".into(),
        message: format!("cannot read: {e}"),
    })?;
    Pipeline::parse(&source, &text)
}

/// The pipelines to run: the files of `pipelines.files` and `extra`
/// (`--pipeline`), or the built-in one when there are none.
pub fn plan(config: &Config, extra: &[PathBuf]) -> Result<Vec<Planned>, ConfigError> {
    let files: Vec<&PathBuf> = config.pipelines.files.iter().chain(extra).collect();
    let declared: Vec<Pipeline> = if files.is_empty() {
        vec![(*pipeline::builtin()).clone()]
    } else {
        files.iter().map(|f| load_file(f)).collect::<Result<_, _>>()?
    };
    let planned: Vec<Planned> = declared
        .into_iter()
        .map(|p| Planned {
            incoming: p.incoming.clone().unwrap_or_else(|| config.paths.incoming.clone()),
            processed: p.processed.clone().unwrap_or_else(|| config.paths.processed.clone()),
            bad_records: p.bad_records.clone().unwrap_or_else(|| config.paths.bad_records.clone()),
            after_commit: p.after_commit.unwrap_or(config.pipeline.after_commit),
            stable_for_ms: p.stable_for_ms.unwrap_or(config.pipeline.stable_for_ms),
            batch_rows: p.batch_rows.unwrap_or(config.pipeline.batch_rows),
            pipeline: Arc::new(p),
        })
        .collect();
    check(&planned)?;
    Ok(planned)
}

/// No two pipelines share a name, an incoming folder or a table, and each
/// one's folders are three different folders.
fn check(planned: &[Planned]) -> Result<(), ConfigError> {
    let err = |p: &Planned, key: &str, message: String| {
        ConfigError::Pipeline(DeclarationError { file: p.pipeline.source.clone(), key: key.into(), message })
    };
    for (i, p) in planned.iter().enumerate() {
        let folders = [("incoming", &p.incoming), ("processed", &p.processed), ("bad_records", &p.bad_records)];
        for (j, (ka, a)) in folders.iter().enumerate() {
            for (kb, b) in &folders[j + 1..] {
                if same_path(a, b) {
                    return Err(err(p, ka, format!("{} is also its {kb} folder", a.display())));
                }
            }
        }
        for q in &planned[..i] {
            if q.pipeline.name == p.pipeline.name {
                let m = format!("{:?} is also the name of the pipeline in {}", p.pipeline.name, q.pipeline.source);
                return Err(err(p, "name", m));
            }
            if same_path(&q.incoming, &p.incoming) {
                let m = format!("{} is also the incoming folder of {}", p.incoming.display(), q.pipeline.source);
                return Err(err(p, "incoming", m));
            }
            if same_table(&q.pipeline.table, &p.pipeline.table) {
                let m = format!("{} is also the table of {}", p.pipeline.table.plain(), q.pipeline.source);
                return Err(err(p, "table", m));
            }
        }
    }
    Ok(())
}

/// An unqualified table is in `public` (the default search path).
fn same_table(a: &pipeline::TableName, b: &pipeline::TableName) -> bool {
    let schema = |t: &pipeline::TableName| t.schema.clone().unwrap_or_else(|| "public".into());
    a.name == b.name && schema(a) == schema(b)
}

/// Creates each pipeline's output folders and checks all three are usable
/// (see `config::prepare_folder`). A folder is named as its key: the
/// pipeline file's (`<file>: incoming`) when it declares it, else the main
/// config's (`paths.incoming`).
pub fn prepare_folders(planned: &[Planned]) -> Result<(), ConfigError> {
    for p in planned {
        let d = &p.pipeline;
        let key = |declared: bool, name: &str| {
            if declared {
                format!("{}: {name}", d.source)
            } else {
                format!("paths.{name}")
            }
        };
        crate::config::prepare_folder(&key(d.incoming.is_some(), "incoming"), &p.incoming, false)?;
        crate::config::prepare_folder(&key(d.processed.is_some(), "processed"), &p.processed, true)?;
        crate::config::prepare_folder(&key(d.bad_records.is_some(), "bad_records"), &p.bad_records, true)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decl(dir: &Path, file: &str, name: &str, table: &str, incoming: &str) -> PathBuf {
        let path = dir.join(file);
        let text = format!(
            "name = \"{name}\"\ntable = \"{table}\"\nkey = []\nincoming = \"{}\"\nprocessed = \"{}\"\nbad_records = \"{}\"\n[columns.a]\ntype = \"text\"\n",
            dir.join(incoming).display(),
            dir.join(format!("{name}-done")).display(),
            dir.join(format!("{name}-bad")).display(),
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn two_pipelines_may_not_share_a_folder_a_table_or_a_name() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let config = Config::default();
        let a = decl(d, "a.toml", "a", "ta", "in-a");
        let ok = plan(&config, &[a.clone(), decl(d, "b.toml", "b", "s.tb", "in-b")]).unwrap();
        assert_eq!(ok.iter().map(|p| p.pipeline.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(ok[0].batch_rows, 10_000, "from the main config");
        let cases = [
            (decl(d, "c.toml", "a", "tc", "in-c"), "c.toml: name: \"a\" is also the name of the pipeline in"),
            (decl(d, "d.toml", "d", "td", "in-a"), "d.toml: incoming:"),
            (decl(d, "e.toml", "e", "public.ta", "in-e"), "e.toml: table: public.ta is also the table of"),
        ];
        for (file, want) in cases {
            let e = plan(&config, &[a.clone(), file]).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
            assert!(e.contains("a.toml"), "names both files: {e}");
        }
        let builtin = plan(&config, &[]).unwrap();
        assert!(builtin[0].is_builtin());
        assert_eq!(builtin[0].incoming, PathBuf::from("data/incoming"));
    }
}
