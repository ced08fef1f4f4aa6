//! `include = ["domain.toml", "env.toml", "ops.toml"]`: one configuration
//! split across files that different teams own, merged into one table
//! before it is checked.
//!
//! Invariant: every key has exactly one file; the same key set in two files
//! is a problem naming both, never a silent override. Tables merge key by
//! key, arrays of tables (`[[route]]`, `[[listener]]`) append in include
//! order, and every key remembers its file so each problem can name it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::ProblemList;

/// The most levels of files including files.
const MAX_DEPTH: usize = 8;

/// Which file each key came from, by its dotted path (`handler.greeter`,
/// `route[2]`, `handler.greeter.config.locale`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origins(BTreeMap<String, PathBuf>);

impl Origins {
    /// The file that set `key` or the nearest table above it.
    pub fn file_of(&self, key: &str) -> Option<&Path> {
        let mut prefix = key;
        loop {
            if let Some(file) = self.0.get(prefix) {
                return Some(file);
            }
            let cut = prefix.rfind(['.', '['])?;
            prefix = &prefix[..cut];
        }
    }

    /// Whether the configuration came from one file.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn record(&mut self, key: &str, value: &toml::Value, file: &Path) {
        self.0.insert(key.to_string(), file.to_path_buf());
        match value {
            toml::Value::Table(table) => {
                for (name, inner) in table {
                    self.record(&format!("{key}.{name}"), inner, file);
                }
            }
            toml::Value::Array(items) if items.iter().all(toml::Value::is_table) => {
                for (index, item) in items.iter().enumerate() {
                    self.record(&format!("{key}[{index}]"), item, file);
                }
            }
            _ => {}
        }
    }
}

/// A configuration read with its includes.
pub(super) struct Gathered {
    /// Every file's keys, merged.
    pub(super) table: toml::Table,
    /// Where each key came from.
    pub(super) origins: Origins,
    /// The included files (not the main one), in the order read.
    pub(super) files: Vec<PathBuf>,
}

/// Merges the files `main` (whose text is `table`, already parsed) includes.
/// Problems go to `problems`, each naming the file it is in.
pub(super) fn gather(main: &Path, mut table: toml::Table, problems: &mut ProblemList) -> Gathered {
    let includes = table.remove("include");
    let mut gathered = Gathered {
        table: toml::Table::new(),
        origins: Origins::default(),
        files: Vec::new(),
    };
    merge(&mut gathered, table, main, problems);
    if let Some(includes) = includes {
        follow(&mut gathered, main, includes, problems, 1);
    }
    gathered
}

/// Reads and merges the files `includes` (the `include` value of `from`) names.
fn follow(
    gathered: &mut Gathered,
    from: &Path,
    includes: toml::Value,
    problems: &mut ProblemList,
    depth: usize,
) {
    let mut in_file = ProblemList::new(from);
    let toml::Value::Array(paths) = includes else {
        in_file.push(
            "include",
            "must be a list of file paths, e.g. include = [\"ops.toml\"]",
        );
        problems.extend(in_file);
        return;
    };
    let base = from.parent().unwrap_or(Path::new(""));
    for (index, entry) in paths.into_iter().enumerate() {
        let key = format!("include[{index}]");
        let toml::Value::String(relative) = entry else {
            in_file.push(key, "must be a file path");
            continue;
        };
        let path = base.join(&relative);
        if depth > MAX_DEPTH {
            in_file.push(
                key,
                format!("files include each other more than {MAX_DEPTH} levels deep"),
            );
            continue;
        }
        if path == from || gathered.files.contains(&path) {
            in_file.push(key, format!("{} is included twice", path.display()));
            continue;
        }
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) => {
                in_file.push(key, format!("cannot read {}: {error}", path.display()));
                continue;
            }
        };
        gathered.files.push(path.clone());
        let mut table = match text.parse::<toml::Table>() {
            Ok(table) => table,
            Err(error) => {
                let mut its = ProblemList::new(&path);
                its.push("(syntax)", error.message().trim().to_string());
                problems.extend(its);
                continue;
            }
        };
        let nested = table.remove("include");
        merge(gathered, table, &path, problems);
        if let Some(nested) = nested {
            follow(gathered, &path, nested, problems, depth + 1);
        }
    }
    problems.extend(in_file);
}

/// Adds `table` (from `file`) to what was gathered.
fn merge(gathered: &mut Gathered, table: toml::Table, file: &Path, problems: &mut ProblemList) {
    let mut in_file = ProblemList::new(file);
    let Gathered {
        table: into,
        origins,
        ..
    } = gathered;
    merge_table(into, table, "", file, origins, &mut in_file);
    problems.extend(in_file);
}

fn merge_table(
    into: &mut toml::Table,
    from: toml::Table,
    prefix: &str,
    file: &Path,
    origins: &mut Origins,
    problems: &mut ProblemList,
) {
    for (name, value) in from {
        let key = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        match (into.get_mut(&name), value) {
            (None, value) => {
                origins.record(&key, &value, file);
                into.insert(name, value);
            }
            (Some(toml::Value::Table(existing)), toml::Value::Table(more)) => {
                merge_table(existing, more, &key, file, origins, problems);
            }
            (Some(toml::Value::Array(existing)), toml::Value::Array(more))
                if existing.iter().all(toml::Value::is_table)
                    && more.iter().all(toml::Value::is_table) =>
            {
                for item in more {
                    origins.record(&format!("{key}[{}]", existing.len()), &item, file);
                    existing.push(item);
                }
            }
            (Some(_), _) => {
                let first = origins
                    .file_of(&key)
                    .map_or_else(|| "another file".into(), |path| path.display().to_string());
                problems.push(
                    key,
                    format!("is also set in {first}: a key belongs to one file"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    #[test]
    fn files_merge_key_by_key_and_remember_where_each_key_came_from() {
        let dir = tempfile::tempdir().expect("temp dir");
        write(
            dir.path(),
            "domain.toml",
            "[handler.greeter]\nimports = [\"translator\"]\n[component.translator]\n\
             [[route]]\npath = \"/greet\"\nhandler = \"greeter\"\n",
        );
        write(
            dir.path(),
            "env.toml",
            "[handler.greeter.config]\nlocale = \"de-DE\"\n",
        );
        write(
            dir.path(),
            "ops.toml",
            "[[listener]]\naddr = \"127.0.0.1:0\"\n[[route]]\npath = \"/other\"\nhandler = \"greeter\"\n",
        );
        let main = write(
            dir.path(),
            "gw.toml",
            "include = [\"domain.toml\", \"env.toml\", \"ops.toml\"]\n[gateway]\nwatch = false\n",
        );
        let table: toml::Table = std::fs::read_to_string(&main)
            .expect("read")
            .parse()
            .expect("toml");
        let mut problems = ProblemList::new(&main);
        let gathered = gather(&main, table, &mut problems);
        assert!(problems.is_empty(), "{:?}", problems.into_problems());
        let file = |key: &str| {
            gathered
                .origins
                .file_of(key)
                .and_then(Path::file_name)
                .map(|name| name.to_string_lossy().into_owned())
        };
        assert_eq!(file("gateway.watch").as_deref(), Some("gw.toml"));
        assert_eq!(
            file("handler.greeter.imports").as_deref(),
            Some("domain.toml")
        );
        assert_eq!(
            file("handler.greeter.config.locale").as_deref(),
            Some("env.toml")
        );
        assert_eq!(file("route[0].path").as_deref(), Some("domain.toml"));
        assert_eq!(file("route[1].handler").as_deref(), Some("ops.toml"));
        assert_eq!(file("listener[0].addr").as_deref(), Some("ops.toml"));
        assert_eq!(gathered.files.len(), 3);
        assert_eq!(
            gathered.table["route"].as_array().map(Vec::len),
            Some(2),
            "[[route]] entries append"
        );
    }

    #[test]
    fn the_same_key_in_two_files_names_both_and_bad_includes_name_their_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        write(
            dir.path(),
            "a.toml",
            "[handler.greeter.config]\nlocale = \"de-DE\"\n",
        );
        write(
            dir.path(),
            "b.toml",
            "include = [\"missing.toml\"]\n[handler.greeter.config]\nlocale = \"es-ES\"\n",
        );
        write(dir.path(), "c.toml", "[handler\n");
        let main = write(
            dir.path(),
            "gw.toml",
            "include = [\"a.toml\", \"b.toml\", \"c.toml\", \"a.toml\"]\n",
        );
        let mut problems = ProblemList::new(&main);
        gather(
            &main,
            std::fs::read_to_string(&main)
                .expect("read")
                .parse()
                .expect("toml"),
            &mut problems,
        );
        let found: Vec<String> = problems
            .into_problems()
            .iter()
            .map(|problem| {
                problem
                    .to_string()
                    .replace(&dir.path().display().to_string(), "{dir}")
            })
            .collect();
        for expected in [
            "{dir}/b.toml: handler.greeter.config.locale: is also set in {dir}/a.toml: a key belongs to one file",
            "{dir}/b.toml: include[0]: cannot read {dir}/missing.toml",
            "{dir}/c.toml: (syntax):",
            "{dir}/gw.toml: include[3]: {dir}/a.toml is included twice",
        ] {
            assert!(
                found.iter().any(|line| line.starts_with(expected)),
                "missing {expected:?} in {found:#?}"
            );
        }
    }
}
